package retry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestAsked(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	reset := strconv.FormatInt(now.Add(30*time.Second).Unix(), 10)
	for _, tc := range []struct {
		name    string
		status  int
		h       http.Header
		after   time.Duration
		limited bool
	}{
		{"429 with Retry-After", 429, h("Retry-After", "7"), 7 * time.Second, true},
		{"403 secondary with Retry-After", 403, h("Retry-After", "3"), 3 * time.Second, true},
		{"Retry-After as a date", 503, h("Retry-After", now.Add(5*time.Second).UTC().Format(http.TimeFormat)), 5 * time.Second, true},
		{"403 primary, remaining 0", 403, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset), 31 * time.Second, true},
		{"429 primary, remaining 0", 429, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset), 31 * time.Second, true},
		{"429 secondary, no header", 429, h(), 0, true},
		{"403 permission", 403, h("X-RateLimit-Remaining", "4999"), 0, false},
		{"404", 404, h(), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after, limited := Asked(tc.status, tc.h, now)
			if after != tc.after || limited != tc.limited {
				t.Fatalf("Asked = %s, %v; want %s, %v", after, limited, tc.after, tc.limited)
			}
		})
	}
}

func TestDoWaitsWhatThePeerAsks(t *testing.T) {
	var waits []Wait
	p := Policy{Attempts: 4, Backoff: time.Millisecond, SecondaryWait: 20 * time.Millisecond}.Reporting(func(w Wait) { waits = append(waits, w) })
	calls := 0
	errs := []error{
		&StatusError{Status: 429, Limited: true},                               // secondary, no header
		&StatusError{Status: 403, Limited: true, After: 10 * time.Millisecond}, // primary
		fmt.Errorf("dial: %w", syscall.ECONNREFUSED),                           // network
	}
	err := p.Do(context.Background(), "create release", func(context.Context) error {
		calls++
		if calls <= len(errs) {
			return errs[calls-1]
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("Do = %v after %d calls; want nil after 4", err, calls)
	}
	if len(waits) != 3 || waits[0].Wait != 20*time.Millisecond || !waits[0].Asked || waits[1].Wait != 10*time.Millisecond || waits[2].Asked {
		t.Fatalf("waits = %+v", waits)
	}
}

func TestDoStops(t *testing.T) {
	final := &StatusError{Status: 401}
	calls := 0
	err := Policy{Backoff: time.Millisecond}.Do(context.Background(), "x", func(context.Context) error { calls++; return final })
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("final: %v after %d calls", err, calls)
	}

	calls = 0
	err = Policy{Attempts: 3, Backoff: time.Millisecond}.Do(context.Background(), "x", func(context.Context) error { calls++; return syscall.ECONNRESET })
	if !errors.Is(err, syscall.ECONNRESET) || calls != 3 {
		t.Fatalf("attempts: %v after %d calls", err, calls)
	}

	var tl *TooLongError
	err = Policy{MaxWait: time.Second}.Do(context.Background(), "x", func(context.Context) error {
		return &StatusError{Status: 403, Limited: true, After: time.Hour}
	})
	if !errors.As(err, &tl) || tl.Asked != time.Hour {
		t.Fatalf("too long: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Policy{Backoff: 10 * time.Second}.Do(ctx, "x", func(context.Context) error { return syscall.ECONNREFUSED })
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("deadline: %v after %s", err, time.Since(start))
	}
}

func TestClassifierFirst(t *testing.T) {
	special := errors.New("engine says: try later")
	p := Policy{}.With(func(err error) (Verdict, bool) {
		if errors.Is(err, special) {
			return Verdict{Retry: true, Reason: "engine busy"}, true
		}
		return Verdict{}, false
	})
	if v := p.Judge(special); !v.Retry || v.Reason != "engine busy" {
		t.Fatalf("Judge(special) = %+v", v)
	}
	if v := p.Judge(context.Canceled); v.Retry {
		t.Fatalf("Judge(cancelled) = %+v", v)
	}
	if v := Text(`Get "https://r/v2/": dial tcp: connect: connection refused`); !v.Retry {
		t.Fatal("Text(refused) is final")
	}
}
