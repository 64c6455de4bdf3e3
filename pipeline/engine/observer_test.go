package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// reposLog is Repos that fetch nothing and log what they are asked; the
// methods it does not define are the embedded nil's (never called here).
type reposLog struct {
	engine.Repos
	log *[]string
}

func (r reposLog) Heads(ctx context.Context) (map[string]string, error) {
	*r.log = append(*r.log, "heads")
	return map[string]string{"api": "a1", "web": "b2"}, nil
}

func (r reposLog) HeadsEach(ctx context.Context, fetched func(repo, head string, took time.Duration)) (map[string]string, error) {
	*r.log = append(*r.log, "heads each")
	fetched("api", "a1", time.Millisecond)
	fetched("web", "b2", time.Millisecond)
	return map[string]string{"api": "a1", "web": "b2"}, nil
}

func (r reposLog) Next(ctx context.Context, bump, given string, commits map[string]string) (engine.Version, error) {
	*r.log = append(*r.log, "next")
	return engine.Version{Version: "1.0.0", Reason: "test"}, nil
}

// TestObserverSeesTheRunFirst: a new run's id comes before its repos are
// fetched, each repo's fetch is reported, and the run that starts has that
// id. Without Fetched the engine asks for the heads plainly.
func TestObserverSeesTheRunFirst(t *testing.T) {
	const src = "name: p\nrepos: {api: {url: ./api}, web: {url: ./web}}\nstages:\n  one: {uses: exec}\n"
	ctx := context.Background()

	var log []string
	e := newEngine(t, openStore(t), src)
	e.Repos = reposLog{log: &log}
	var created string
	run, err := e.Run(ctx, engine.RunRequest{}, engine.Observer{
		Created: func(id string) { created = id; log = append(log, "created") },
		Fetched: func(repo, head string, _ time.Duration) { log = append(log, "fetched "+repo+" "+head) },
		Started: func(r *pipeline.Run) {
			log = append(log, "started "+map[bool]string{true: "same id", false: r.ID}[r.ID == created])
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"created", "heads each", "fetched api a1", "fetched web b2", "next", "started same id"}
	if diff := cmp.Diff(want, log); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if run.ID != created || run.Commits["web"] != "b2" {
		t.Errorf("run %s with commits %v, want %s pinned at the heads", run.ID, run.Commits, created)
	}

	log = nil
	e = newEngine(t, openStore(t), src)
	e.Repos = reposLog{log: &log}
	if _, err := e.Run(ctx, engine.RunRequest{}, engine.Observer{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"heads", "next"}, log); diff != "" {
		t.Errorf("calls without an observer (-want +got):\n%s", diff)
	}
}
