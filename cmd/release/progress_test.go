package main

import (
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFetchWatch(t *testing.T) {
	var out syncBuffer
	var mu sync.Mutex
	fw := &fetchWatch{w: &out, mu: &mu, every: 10 * time.Millisecond, now: time.Now}
	fw.begin([]string{"s1", "s2", "s3", "s4", "s5", "s6"})
	fw.fetched("s2")
	time.Sleep(35 * time.Millisecond)
	for _, r := range []string{"s1", "s3", "s4", "s5", "s6"} {
		fw.fetched(r)
	}
	quiet := out.String()
	time.Sleep(30 * time.Millisecond)
	fw.done() // a second end is harmless

	lines := strings.Split(strings.TrimSpace(quiet), "\n")
	if len(lines) < 2 {
		t.Fatalf("want a line every 10ms while fetching, got %q", quiet)
	}
	want := regexp.MustCompile(`^\d\d:\d\d:\d\d fetching 5 of 6 repos, \d+\.\ds: s1, s3, s4, s5 and 1 more$`)
	for _, l := range lines {
		if !want.MatchString(l) {
			t.Errorf("line %q does not match %s", l, want)
		}
	}
	if got := out.String(); got != quiet {
		t.Errorf("lines after the last repo was fetched: %q", strings.TrimPrefix(got, quiet))
	}
}

func TestFetchWatchDoneEarly(t *testing.T) {
	var out syncBuffer
	var mu sync.Mutex
	fw := &fetchWatch{w: &out, mu: &mu, every: 5 * time.Millisecond, now: time.Now}
	fw.begin([]string{"api"})
	fw.done() // the fetch failed
	time.Sleep(20 * time.Millisecond)
	fw.fetched("api")
	if got := out.String(); got != "" {
		t.Errorf("lines after done: %q", got)
	}
	var none *fetchWatch
	none.done() // a run that fetched nothing
}
