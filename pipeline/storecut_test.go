package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// unanswering is a store that, once cut, answers no call: each waits for
// its context to end, as a call to a store behind a black-holed network
// does (the driver gives up at the context's deadline, not before).
type unanswering struct {
	pipeline.Store
	cut *atomic.Bool
}

func (s unanswering) wait(ctx context.Context) error {
	if !s.cut.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s unanswering) Fenced(l *pipeline.Lease) pipeline.Store {
	return unanswering{Store: s.Store.Fenced(l), cut: s.cut}
}

func (s unanswering) Run(ctx context.Context, id string) (*pipeline.Run, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.Run(ctx, id)
}

func (s unanswering) SaveRun(ctx context.Context, r *pipeline.Run) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.SaveRun(ctx, r)
}

func (s unanswering) SaveNodes(ctx context.Context, id string, ns ...*pipeline.Node) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.SaveNodes(ctx, id, ns...)
}

func (s unanswering) AppendLog(ctx context.Context, id string, lines []pipeline.LogLine) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.AppendLog(ctx, id, lines)
}

func (s unanswering) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (*pipeline.Lease, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.AcquireLease(ctx, name, holder, ttl)
}

func (s unanswering) RenewLease(ctx context.Context, l *pipeline.Lease, ttl time.Duration) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.RenewLease(ctx, l, ttl)
}

func (s unanswering) ReleaseLease(ctx context.Context, l *pipeline.Lease) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.ReleaseLease(ctx, l)
}

// TestLeaseLossWhileStoreHangs cuts the store off while a node runs and
// logs. The node's context must end before the leases expire (another
// owner may take them then), although every call to the store hangs, and
// the run must end fenced within a bound, not wait for the store for ever.
func TestLeaseLossWhileStoreHangs(t *testing.T) {
	const ttl = time.Second
	h := newHarness(t, `
name: cut
environments: {staging: {}}
stages:
  act: {uses: script, environment: staging}
`)
	started := make(chan struct{})
	stopped := make(chan time.Time, 1)
	h.b.set("act", func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
		context.AfterFunc(ctx, func() { stopped <- time.Now() })
		close(started)
		for i := 0; ; i++ {
			fmt.Fprintf(env.Log, "line %d\n", i)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	cut := &atomic.Bool{}
	x := &pipeline.Executor{Store: unanswering{Store: h.store, cut: cut}, Locks: []string{"env/staging"}, LeaseTTL: ttl, PollCancel: 20 * time.Millisecond}
	r := h.newRun()
	done := make(chan error, 1)
	go func() { done <- x.Execute(context.Background(), h.p, h.plan, r) }()
	<-started
	cut.Store(true)
	cutAt := time.Now()

	var stoppedAfter time.Duration
	select {
	case at := <-stopped:
		stoppedAfter = at.Sub(cutAt)
		if d := stoppedAfter; d >= ttl {
			t.Errorf("the node's context ended %s after the store was cut: at or past the leases' expiry (TTL %s)", d, ttl)
		}
	case <-time.After(5 * ttl):
		t.Fatalf("the node's context has not ended %s after the store was cut (lease TTL %s)", 5*ttl, ttl)
	}
	// The run ends within one TTL for the loss, then one for each write
	// it still tries (the node's log, its status, the run's), and one more.
	bound := 5 * ttl
	select {
	case err := <-done:
		var fe *pipeline.FencedError
		if !errors.As(err, &fe) {
			t.Errorf("Execute = %v, want a *FencedError", err)
		}
		d := time.Since(cutAt)
		if d > bound {
			t.Errorf("Execute returned %s after the store was cut, want within %s", d, bound)
		}
		t.Logf("after the cut: the node's context ended in %s, Execute returned in %s (lease TTL %s)", stoppedAfter.Round(time.Millisecond), d.Round(time.Millisecond), ttl)
	case <-time.After(bound + 5*time.Second):
		t.Fatalf("Execute has not returned %s after the store was cut", bound+5*time.Second)
	}
}
