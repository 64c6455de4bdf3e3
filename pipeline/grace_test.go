package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// TestSignalWithStoreCut cuts the store off while a node runs, then
// cancels the run's context (a signal): Execute returns within its grace,
// with ErrInterrupted, naming what it could not record; the record still
// says running, for a resume to take over.
func TestSignalWithStoreCut(t *testing.T) {
	h := newHarness(t, `
name: cut
environments: {staging: {}}
stages:
  act: {uses: script, environment: staging}
  after: {uses: script, needs: [act]}
`)
	started := make(chan struct{})
	h.b.set("act", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	cut := &atomic.Bool{}
	const grace = 300 * time.Millisecond
	x := &pipeline.Executor{Store: unanswering{Store: h.store, cut: cut}, Locks: []string{"env/staging"}, PollCancel: 20 * time.Millisecond, Grace: grace}
	r := h.newRun()
	ctx, signal := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Execute(ctx, h.p, h.plan, r) }()
	<-started
	cut.Store(true)
	time.Sleep(100 * time.Millisecond) // the cancel poll now hangs
	signalled := time.Now()
	signal()

	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Execute has not returned 10 s after the signal")
	}
	took := time.Since(signalled)
	t.Logf("returned %s after the signal: %v", took.Round(time.Millisecond), err)
	// The grace, then half a second for the final records; as much again
	// for a loaded machine.
	if bound := 2 * (grace + 500*time.Millisecond); took > bound {
		t.Errorf("Execute returned %s after the signal, want within %s", took, bound)
	}
	var ue *pipeline.UnrecordedError
	if !errors.As(err, &ue) || !errors.Is(err, pipeline.ErrInterrupted) {
		t.Fatalf("Execute = %v, want an *UnrecordedError that is ErrInterrupted", err)
	}
	lines := strings.Join(ue.Lines(), "\n")
	for _, want := range []string{"not recorded: node act interrupted", "not recorded: node after interrupted", "not recorded: run interrupted", "resume with: release resume " + r.ID} {
		if !strings.Contains(lines, want) {
			t.Errorf("lines do not say %q:\n%s", want, lines)
		}
	}
	cut.Store(false)
	if got := h.statuses(r.ID); status(got["act"]) != "running" || got["run"] != "running" {
		t.Errorf("record after the signal = %v, want act and the run still running, for a resume", got)
	}
}

// TestSignalRecordsWhatItCan: with the store answering, a signal records
// every node and the run as interrupted, and nothing is named unrecorded.
func TestSignalRecordsWhatItCan(t *testing.T) {
	h := newHarness(t, `
name: sig
stages:
  act: {uses: script}
  after: {uses: script, needs: [act]}
`)
	started := make(chan struct{})
	h.b.set("act", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r := h.newRun()
	ctx, signal := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.execute(ctx, r, 2) }()
	<-started
	signal()
	err := <-done
	var ue *pipeline.UnrecordedError
	if !errors.Is(err, pipeline.ErrInterrupted) || errors.As(err, &ue) {
		t.Fatalf("Execute = %v, want ErrInterrupted with everything recorded", err)
	}
	want := map[string]string{"run": "interrupted", "act": "interrupted", "after": "interrupted"}
	got := h.statuses(r.ID)
	for k, v := range want {
		if status(got[k]) != v {
			t.Errorf("record = %v, want %v", got, want)
			break
		}
	}
}

// status is the status of a harness's statuses entry, without its error.
func status(s string) string {
	st, _, _ := strings.Cut(s, ":")
	return st
}
