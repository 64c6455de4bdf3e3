package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// TestClaimTakenOverFencesTheOwner: another owner takes the run's claim
// while a node runs. Within one heartbeat the node's context is cancelled,
// its Fence fails, the run ends fenced, and none of the old owner's writes
// land: the record still shows the node as it was when the claim moved.
func TestClaimTakenOverFencesTheOwner(t *testing.T) {
	h := newHarness(t, `
name: p
environments:
  staging: {}
stages:
  deploy: {uses: script, environment: staging}
`)
	inside := make(chan *stages.Env, 1)
	fenceErr := make(chan error, 1)
	h.b.set("deploy", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		inside <- env
		<-ctx.Done()
		fenceErr <- env.Fence(context.Background())
		return stages.Outputs{"effect": "landed"}, ctx.Err()
	})
	r := h.newRun()
	id := r.ID
	const ttl = 900 * time.Millisecond
	x := &pipeline.Executor{Store: h.store, Parallel: 1, Locks: []string{"env/staging"}, LeaseTTL: ttl}
	done := make(chan error, 1)
	go func() { done <- x.Execute(context.Background(), h.p, h.plan, r) }()
	<-inside

	_, err := h.store.AcquireLease(context.Background(), pipeline.ClaimPrefix+id, "thief", time.Minute)
	var held *pipeline.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("a second claimant got %v, want a HeldError", err)
	}
	if o := pipeline.ParseHolder(held.Holder); o.RunID != id || o.Token == "" || o.Token == id {
		t.Fatalf("the claim is held by %q: want a fresh owner token of run %s", held.Holder, id)
	}
	taken := time.Now()
	if _, err := h.store.TakeOverLease(context.Background(), pipeline.ClaimPrefix+id, held.Holder, "thief", time.Minute); err != nil {
		t.Fatal(err)
	}

	var fe *pipeline.FencedError
	if err := <-done; !errors.As(err, &fe) {
		t.Fatalf("run ended with %v, want a FencedError", err)
	}
	if waited := time.Since(taken); waited > ttl {
		t.Errorf("the owner stopped %s after losing its claim, want within a heartbeat (%s)", waited, ttl/3)
	}
	if err := <-fenceErr; !errors.Is(err, stages.ErrFenced) {
		t.Errorf("Fence after the takeover = %v, want ErrFenced", err)
	}
	got := h.statuses(id)
	if got["deploy"] != "running" || got["run"] != "running" {
		t.Errorf("record after the takeover: %v; want it as the claim left it (deploy running), not the fenced owner's writes", got)
	}
}

// TestResumeRecordsFencedAttempt: a node a gone owner left running is
// recorded fenced, naming the owner, before the new owner redoes it.
func TestResumeRecordsFencedAttempt(t *testing.T) {
	h := newHarness(t, `
name: p
stages:
  work: {uses: script}
`)
	r := h.newRun()
	r.Owner = pipeline.Owner{Token: "0123abcd", RunID: r.ID, Host: "elsewhere", PID: 42}.Holder()
	r.Status = pipeline.Running
	n := r.Node("work")
	n.Status, n.Attempts = pipeline.Running, 1
	if err := h.store.SaveRun(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if err := h.store.SaveNodes(context.Background(), r.ID, n); err != nil {
		t.Fatal(err)
	}
	h.b.set("work", func(context.Context, *stages.Env) (stages.Outputs, error) { return nil, nil })
	if err := h.execute(context.Background(), r, 1); err != nil {
		t.Fatal(err)
	}
	want := []string{"work fenced", "work running", "work succeeded"}
	h.mu.Lock()
	got := append([]string(nil), h.evs...)
	h.mu.Unlock()
	if len(got) < 3 || got[0] != want[0] || got[1] != want[1] || got[len(got)-1] != want[2] {
		t.Errorf("events %v, want %v", got, want)
	}
	if fin, err := h.store.Run(context.Background(), r.ID); err != nil || fin.Node("work").Attempts != 2 {
		t.Errorf("attempts after the redo: %v %v, want 2", fin, err)
	}
}
