package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
)

// TestStatusCommits: each environment says which commit of each repo its
// code is at, the one its release pinned, also after a rollback, and
// nothing for an environment never deployed to.
func TestStatusCommits(t *testing.T) {
	st := openStore(t)
	e := newEngine(t, st, "name: h\nenvironments: {dev: {}, staging: {from: dev}, prod: {from: staging}}\nstages:\n  one: {uses: exec}\n")
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	for _, r := range []pipeline.Release{
		{Version: "1.0.0", RunID: "r1", Commits: map[string]string{"api": "a1", "web": "w1"}},
		{Version: "1.1.0", RunID: "r2", Commits: map[string]string{"api": "a2", "web": "w1"}},
	} {
		r.Pipeline, r.Images, r.CreatedAt = "h", map[string]string{"api": "img"}, at
		if err := st.RecordRelease(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range []pipeline.Deployment{
		{Environment: "dev", Version: "1.0.0", RunID: "r1", Kind: "run"},
		{Environment: "dev", Version: "1.1.0", RunID: "r2", Kind: "run"},
		{Environment: "staging", Version: "1.0.0", RunID: "r3", Kind: "promote"},
		{Environment: "staging", Version: "1.1.0", RunID: "r4", Kind: "promote"},
		{Environment: "staging", Version: "1.0.0", RunID: "r4", Kind: "rollback"},
	} {
		d.Images, d.At = map[string]string{"api": "img"}, at.Add(time.Duration(i)*time.Minute)
		if err := st.RecordDeployment(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	envs, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	for _, s := range envs {
		got[s.Name+" "+s.Version] = s.Commits
	}
	want := map[string]map[string]string{
		"dev 1.1.0":     {"api": "a2", "web": "w1"},
		"staging 1.0.0": {"api": "a1", "web": "w1"},
		"prod ":         nil,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commits by environment (-want +got):\n%s", diff)
	}
}
