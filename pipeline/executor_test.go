package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// script is a stage kind whose behaviour a test sets per node id through
// the shared behaviours map.
type script struct{ b *behaviours }

type behaviours struct {
	mu    sync.Mutex
	fns   map[string]func(ctx context.Context, env *stages.Env) (stages.Outputs, error)
	calls map[string]int
	order []string
}

func (s *script) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	s.b.mu.Lock()
	s.b.calls[env.Node]++
	s.b.order = append(s.b.order, env.Node)
	fn := s.b.fns[env.Node]
	s.b.mu.Unlock()
	if fn == nil {
		return stages.Outputs{"node": env.Node}, nil
	}
	return fn(ctx, env)
}

func (b *behaviours) set(node string, fn func(ctx context.Context, env *stages.Env) (stages.Outputs, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fns[node] = fn
}

func (b *behaviours) count(node string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[node]
}

type harness struct {
	t     *testing.T
	p     *pipeline.Pipeline
	plan  *pipeline.Plan
	store *store.DB
	b     *behaviours
	mu    sync.Mutex
	evs   []string
}

func newHarness(t *testing.T, src string) *harness {
	t.Helper()
	b := &behaviours{fns: map[string]func(context.Context, *stages.Env) (stages.Outputs, error){}, calls: map[string]int{}}
	reg := &stages.Registry{}
	reg.Register(stages.Kind{Name: "script", New: func() stages.Stage { return &script{b: b} }})
	reg.Register(stages.Kind{Name: "approval", New: func() stages.Stage { return &gate{} }})
	p, err := pipeline.Parse("pipeline.yaml", filepath.Join(t.TempDir(), "pipeline.yaml"), []byte(strings.TrimLeft(src, "\n")), reg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &harness{t: t, p: p, plan: plan, store: st, b: b}
}

// gate is a minimal approval stage, so these tests need no real kinds.
type gate struct{}

func (gate) Run(_ context.Context, env *stages.Env) (stages.Outputs, error) {
	if env.Approval == nil {
		return nil, stages.ErrWaiting
	}
	return stages.Outputs{"by": env.Approval.By}, nil
}

func (h *harness) newRun() *pipeline.Run {
	h.t.Helper()
	r := pipeline.NewRun("run", h.p, h.plan, time.Now())
	if err := h.store.CreateRun(context.Background(), r); err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) execute(ctx context.Context, r *pipeline.Run, parallel int) error {
	x := &pipeline.Executor{Store: h.store, Parallel: parallel, PollCancel: 20 * time.Millisecond, Observe: func(e pipeline.Event) {
		h.mu.Lock()
		h.evs = append(h.evs, e.Node+" "+string(e.Status))
		h.mu.Unlock()
	}}
	return x.Execute(ctx, h.p, h.plan, r)
}

// statuses reads the run back from the store: what a crash would leave.
func (h *harness) statuses(id string) map[string]string {
	h.t.Helper()
	r, err := h.store.Run(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]string{"run": string(r.Status)}
	for _, n := range r.Nodes {
		s := string(n.Status)
		if n.Error != "" {
			s += ": " + n.Error
		}
		out[n.ID] = s
	}
	return out
}

const fanout = `
name: p
repos: {api: {url: ./api}, web: {url: ./web}}
services:
  api: {repo: api, image: sb/api}
  web: {repo: web, image: sb/web}
stages:
  build:  {uses: script, for_each: service}
  push:   {uses: script, for_each: service, needs: [build]}
  deploy: {uses: script, needs: [push]}
`

func TestPerServiceEdges(t *testing.T) {
	// build[api]   build[web]
	//     |            |
	// push[api]    push[web]
	//      \        /
	//       deploy
	h := newHarness(t, fanout)
	release := make(chan struct{})
	h.b.set("build[web]", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		<-release // holds until push[api] has run
		return nil, nil
	})
	h.b.set("push[api]", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		close(release)
		return stages.Outputs{"image": "127.0.0.1:5000/sb/api@sha256:aa"}, nil
	})
	h.b.set("deploy", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		if env.Images["api"] == "" || len(env.Inputs) != 2 {
			return nil, fmt.Errorf("deploy saw images %v and inputs %v", env.Images, env.Inputs)
		}
		return nil, nil
	})
	r := h.newRun()
	if err := h.execute(context.Background(), r, 2); err != nil {
		t.Fatal(err)
	}
	got := h.statuses(r.ID)
	want := map[string]string{"run": "succeeded", "build[api]": "succeeded", "build[web]": "succeeded", "push[api]": "succeeded", "push[web]": "succeeded", "deploy": "succeeded"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	stored, _ := h.store.Run(context.Background(), r.ID)
	if diff := cmp.Diff(map[string]string{"api": "127.0.0.1:5000/sb/api@sha256:aa"}, stored.Images); diff != "" {
		t.Errorf("images of the run (-want +got):\n%s", diff)
	}
}

func TestFailureSkipsDownstreamOnly(t *testing.T) {
	h := newHarness(t, fanout)
	h.b.set("build[api]", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		// In flight until the failure of build[web] is recorded.
		for h.statuses(env.RunID)["build[web]"] != "failed: exit status 1" {
			time.Sleep(5 * time.Millisecond)
		}
		return nil, nil
	})
	h.b.set("build[web]", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		return nil, errors.New("exit status 1")
	})
	r := h.newRun()
	err := h.execute(context.Background(), r, 2)
	var fe *pipeline.FailedError
	if !errors.As(err, &fe) {
		t.Fatalf("error = %v, want a *FailedError", err)
	}
	if diff := cmp.Diff("run "+r.ID+" failed\n  build[web]: exit status 1", err.Error()); diff != "" {
		t.Errorf("error names only the root cause (-want +got):\n%s", diff)
	}
	want := map[string]string{
		"run":        "failed",
		"build[api]": "succeeded", // in flight: finishes
		"build[web]": "failed: exit status 1",
		"push[api]":  "pending", // not downstream of the failure, but nothing new starts
		"push[web]":  "skipped: upstream build[web] failed",
		"deploy":     "skipped: upstream build[web] failed",
	}
	if diff := cmp.Diff(want, h.statuses(r.ID)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}

	// Resume: only what did not succeed runs again.
	h.b.set("build[web]", nil)
	r, _ = h.store.Run(context.Background(), r.ID)
	if err := h.execute(context.Background(), r, 2); err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string]int{"build[api]": 1, "build[web]": 2, "push[api]": 1, "push[web]": 1, "deploy": 1} {
		if got := h.b.count(node); got != want {
			t.Errorf("%s ran %d times, want %d", node, got, want)
		}
	}
	if got := h.statuses(r.ID)["run"]; got != "succeeded" {
		t.Errorf("resumed run is %s", got)
	}
}

func TestRetryAndTimeout(t *testing.T) {
	h := newHarness(t, `
name: p
stages:
  flaky: {uses: script, retry: {attempts: 3, backoff: 1ms}}
  slow:  {uses: script, timeout: 50ms}
  never: {uses: script, retry: {attempts: 2}}
`)
	h.b.set("flaky", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		if env.Attempt < 3 {
			return nil, fmt.Errorf("attempt %d: connection refused", env.Attempt)
		}
		return nil, nil
	})
	h.b.set("slow", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	h.b.set("never", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		return nil, stages.Permanent(errors.New("bad input"))
	})
	r := h.newRun()
	_ = h.execute(context.Background(), r, 3)
	stored, _ := h.store.Run(context.Background(), r.ID)
	got := map[string]string{}
	for _, n := range stored.Nodes {
		got[n.ID] = fmt.Sprintf("%s after %d: %s", n.Status, n.Attempts, n.Error)
	}
	want := map[string]string{
		"flaky": "succeeded after 3: ",
		"slow":  "failed after 1: timed out after 50ms: context deadline exceeded",
		"never": "failed after 1: bad input", // permanent errors are not retried
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
}

func TestApprovalWaitsThenResumes(t *testing.T) {
	h := newHarness(t, `
name: p
stages:
  test: {uses: script}
  gate: {uses: approval, needs: [test]}
  ship: {uses: script, needs: [gate]}
  side: {uses: script}
`)
	r := h.newRun()
	err := h.execute(context.Background(), r, 1)
	var we *pipeline.WaitingError
	if !errors.As(err, &we) {
		t.Fatalf("error = %v, want a *WaitingError", err)
	}
	want := map[string]string{"run": "waiting", "test": "succeeded", "gate": "waiting", "ship": "pending", "side": "succeeded"}
	if diff := cmp.Diff(want, h.statuses(r.ID)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	r, _ = h.store.Run(context.Background(), r.ID)
	g := r.Node("gate")
	g.Approval = &stages.Approval{By: "alice", At: time.Now()}
	if err := h.store.SaveNodes(context.Background(), r.ID, g); err != nil {
		t.Fatal(err)
	}
	if err := h.execute(context.Background(), r, 1); err != nil {
		t.Fatal(err)
	}
	r, _ = h.store.Run(context.Background(), r.ID)
	if got := r.Node("gate").Outputs["by"]; got != "alice" {
		t.Errorf("gate outputs by = %q, want alice", got)
	}
	if h.b.count("test") != 1 || h.b.count("ship") != 1 {
		t.Errorf("test ran %d times, ship %d; want once each", h.b.count("test"), h.b.count("ship"))
	}
}

func TestInterruptCancelsInFlight(t *testing.T) {
	h := newHarness(t, `
name: p
stages:
  long:  {uses: script}
  after: {uses: script, needs: [long]}
`)
	started := make(chan struct{})
	h.b.set("long", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	r := h.newRun()
	if err := h.execute(ctx, r, 1); !errors.Is(err, pipeline.ErrInterrupted) {
		t.Fatalf("error = %v, want ErrInterrupted", err)
	}
	want := map[string]string{
		"run":   "interrupted",
		"long":  "interrupted: interrupted: context canceled",
		"after": "interrupted: run stopped before this node started",
	}
	if diff := cmp.Diff(want, h.statuses(r.ID)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

func TestCancelFromAnotherProcess(t *testing.T) {
	h := newHarness(t, `
name: p
stages:
  long: {uses: script}
`)
	h.b.set("long", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r := h.newRun()
	id := r.ID
	go func() {
		// What `release cancel` does, seen through the store.
		for {
			time.Sleep(10 * time.Millisecond)
			got, err := h.store.Run(context.Background(), id)
			if err == nil && got.Status == pipeline.Running {
				_ = h.store.RequestCancel(context.Background(), id, pipeline.Cancel{By: "alice", At: time.Now()})
				return
			}
		}
	}()
	var ce *pipeline.CancelledError
	if err := h.execute(context.Background(), r, 1); !errors.As(err, &ce) || ce.By != "alice" {
		t.Fatalf("error = %v, want a CancelledError by alice", err)
	}
	got, err := h.store.Run(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != pipeline.Cancelled || got.Node("long").Status != pipeline.Cancelled {
		t.Errorf("run %s, node %s; want both cancelled", got.Status, got.Node("long").Status)
	}
}

// TestStatusCommittedBeforeDependentsStart reads the store from inside a
// node: its upstream must already be recorded as succeeded.
func TestStatusCommittedBeforeDependentsStart(t *testing.T) {
	h := newHarness(t, fanout)
	h.b.set("deploy", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		r, err := h.store.Run(ctx, env.RunID)
		if err != nil {
			return nil, err
		}
		for _, id := range []string{"push[api]", "push[web]"} {
			if s := r.Node(id).Status; s != pipeline.Succeeded {
				return nil, fmt.Errorf("%s is recorded %s while deploy runs", id, s)
			}
		}
		if s := r.Node("deploy").Status; s != pipeline.Running {
			return nil, fmt.Errorf("deploy is recorded %s while it runs", s)
		}
		return nil, nil
	})
	if err := h.execute(context.Background(), h.newRun(), 2); err != nil {
		t.Fatal(err)
	}
}

func TestLocks(t *testing.T) {
	h := newHarness(t, `
name: p
stages:
  deploy: {uses: script}
`)
	inside := make(chan struct{})
	release := make(chan struct{})
	var overlap, active int32
	var mu sync.Mutex
	h.b.set("deploy", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		mu.Lock()
		active++
		if active > 1 {
			overlap++
		}
		mu.Unlock()
		if err := env.Fence(ctx); err != nil {
			return nil, err
		}
		select {
		case inside <- struct{}{}:
			<-release
		default:
		}
		mu.Lock()
		active--
		mu.Unlock()
		return nil, nil
	})
	first := h.newRun()
	x := func(wait bool) *pipeline.Executor {
		return &pipeline.Executor{Store: h.store, Parallel: 1, Locks: []string{"env/staging"}, LeaseTTL: time.Second, Wait: wait}
	}
	done := make(chan error)
	go func() { done <- x(false).Execute(context.Background(), h.p, h.plan, first) }()
	<-inside

	// A second run for the same environment is refused, naming the holder,
	// and nothing of it ran.
	second := h.newRun()
	err := x(false).Execute(context.Background(), h.p, h.plan, second)
	var held *pipeline.HeldError
	if !errors.As(err, &held) || pipeline.ParseHolder(held.Holder).RunID != first.ID {
		t.Fatalf("second run: error = %v, want HeldError naming %s", err, first.ID)
	}
	if got := h.statuses(second.ID)["deploy"]; got != "pending" {
		t.Errorf("refused run's node is %s, want pending", got)
	}

	// With Wait it runs after the first lets go; the heartbeat kept the
	// first's one-second lease alive meanwhile.
	waited := make(chan error)
	go func() { waited <- x(true).Execute(context.Background(), h.p, h.plan, second) }()
	time.Sleep(1500 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if overlap != 0 {
		t.Errorf("%d overlapping deploys", overlap)
	}
}
