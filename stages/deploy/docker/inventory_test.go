package docker

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// TestSortOut: the adoption rule on a host's containers of one service,
// newest first, without an engine.
func TestSortOut(t *testing.T) {
	at := time.Unix(1000, 0)
	c := func(name, hash string, running bool, age int) container {
		return container{ID: name, Name: name, Labels: map[string]string{target.LabelConfig: hash}, Running: running, Created: at.Add(-time.Duration(age) * time.Second)}
	}
	slot := func(c container, n string) container {
		c.Labels[LabelReplica] = n
		return c
	}
	names := func(cs []container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	tests := []struct {
		name             string
		list             []container
		impostors        []string
		cur              string
		stale, old, more []string
	}{
		{name: "nothing runs"},
		{name: "the intended one runs: adopted", list: []container{c("a", "h1", true, 0)}, cur: "a"},
		{name: "another configuration: replaced", list: []container{c("a", "h0", true, 0)}, old: []string{"a"}},
		{name: "the intended one stopped: removed", list: []container{c("a", "h1", false, 0), c("b", "h0", true, 1)}, stale: []string{"a"}, old: []string{"b"}},
		{name: "two of the intended one: the newest running kept", list: []container{c("a", "h1", false, 0), c("b", "h1", true, 1), c("c", "h1", true, 2)}, cur: "b", stale: []string{"a", "c"}},
		{name: "old ones stay newest first", list: []container{c("a", "h1", true, 0), c("b", "h0", true, 1), c("c", "h9", false, 2)}, cur: "a", old: []string{"b", "c"}},
		{name: "no label: replaced", list: []container{{ID: "x", Name: "x", Running: true}}, old: []string{"x"}},
		{name: "an impostor: replaced once the new one serves", list: []container{c("a", "h1", true, 0)}, impostors: []string{"a"}, old: []string{"a"}},
		{name: "replicas keep a container per slot", list: []container{c("a", "h1", true, 0), slot(c("b", "h1", true, 1), "2"), slot(c("c", "h1", true, 2), "2")}, cur: "a", more: []string{"b"}, stale: []string{"c"}},
		{name: "an impostor beside the real one", list: []container{c("a", "h1", true, 0), c("b", "h1", true, 1)}, impostors: []string{"a"}, cur: "b", old: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := sortOut(tt.list, "h1", func(c container) string {
				if slices.Contains(tt.impostors, c.Name) {
					return "an impostor"
				}
				return ""
			})
			cur := ""
			if inv.cur != nil {
				cur = inv.cur.Name
			}
			got := struct {
				Cur              string
				Stale, Old, More []string
			}{cur, names(inv.stale), names(inv.old), names(inv.more)}
			want := struct {
				Cur              string
				Stale, Old, More []string
			}{tt.cur, tt.stale, tt.old, tt.more}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("sortOut (-want +got):\n%s", diff)
			}
		})
	}
}

// TestImpostor: a container is adopted only when the engine reports the
// intended image and environment.
func TestImpostor(t *testing.T) {
	s := target.Service{Image: "r/api@sha256:1", Env: []string{"A=1", "TOKEN=s3cret"}}
	tests := []struct {
		name string
		st   dockerhost.State
		why  string
	}{
		{"the intended one", dockerhost.State{Image: "r/api@sha256:1", Env: []string{"PATH=/bin", "A=1", "TOKEN=s3cret"}}, ""},
		{"another image", dockerhost.State{Image: "r/api@sha256:2", Env: []string{"A=1", "TOKEN=s3cret"}}, "it runs r/api@sha256:2, not r/api@sha256:1"},
		{"a tag, not the digest", dockerhost.State{Image: "r/api:latest", Env: []string{"A=1", "TOKEN=s3cret"}}, "it runs r/api:latest, not r/api@sha256:1"},
		{"another value, not told", dockerhost.State{Image: "r/api@sha256:1", Env: []string{"A=1", "TOKEN=other"}}, "its variable TOKEN is not the intended one"},
		{"a variable missing", dockerhost.State{Image: "r/api@sha256:1", Env: []string{"TOKEN=s3cret"}}, "its variable A is not the intended one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := impostor(tt.st, s); got != tt.why {
				t.Errorf("impostor = %q, want %q", got, tt.why)
			}
		})
	}
}
