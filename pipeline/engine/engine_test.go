package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// noop is a stage that does nothing, so these tests need no real kinds.
type noop struct{}

func (noop) Run(context.Context, *stages.Env) (stages.Outputs, error) { return nil, nil }

func newEngine(t *testing.T, st pipeline.Store, src string) *engine.Engine {
	t.Helper()
	reg := &stages.Registry{}
	reg.Register(stages.Kind{Name: "exec", New: func() stages.Stage { return noop{} }})
	p, err := pipeline.Parse("pipeline.yaml", filepath.Join(t.TempDir(), "pipeline.yaml"), []byte(src), reg)
	if err != nil {
		t.Fatal(err)
	}
	return &engine.Engine{Pipeline: p, Store: st, Stages: reg, WorkDir: t.TempDir()}
}

func openStore(t *testing.T) pipeline.Store {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func pipelineNamed(name string) string {
	return "name: " + name + "\nversion: {bump: minor}\nstages:\n  one: {uses: exec}\n"
}

// TestVersionsPerPipeline: runs of one pipeline get distinct versions even
// when created at once; another pipeline in the same store counts its own;
// a given version that is taken is refused as a usage error.
func TestVersionsPerPipeline(t *testing.T) {
	st := openStore(t)
	a := newEngine(t, st, pipelineNamed("alpha"))
	b := newEngine(t, st, pipelineNamed("beta"))
	ctx := context.Background()

	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				r, err := a.Run(ctx, engine.RunRequest{Exec: engine.Exec{Parallel: 1, Wait: true}}, engine.Observer{})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[r.Version]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 20 {
		t.Errorf("20 runs got %d distinct versions: %v", len(seen), seen)
	}
	r, err := b.Run(ctx, engine.RunRequest{}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != "0.1.0" {
		t.Errorf("beta's first run got %s, want 0.1.0 whatever alpha released", r.Version)
	}
	_, err = b.Run(ctx, engine.RunRequest{Version: "0.1.0"}, engine.Observer{})
	var ue *engine.UsageError
	if !errors.As(err, &ue) {
		t.Errorf("a taken --version gave %v, want a UsageError", err)
	}
}

// TestCompare: what runs beside what the record says.
func TestCompare(t *testing.T) {
	recorded := map[string]string{"api": "r/api@sha256:aa", "web": "r/web@sha256:bb"}
	live := []engine.Live{
		{Service: "api", Digest: "r/api@sha256:aa", State: "running", Healthy: true},
		{Service: "web", State: "missing"},
		{Service: "auth", Digest: "r/auth@sha256:cc", State: "running", Healthy: true},
	}
	var got []string
	for _, s := range engine.Compare(recorded, live) {
		got = append(got, s.Name+": "+s.Drift)
	}
	want := []string{
		"api: ",
		"web: no container runs; recorded r/web@sha256:bb",
		"auth: runs r/auth@sha256:cc, which no recorded release put here",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("drift (-want +got):\n%s", diff)
	}
}
