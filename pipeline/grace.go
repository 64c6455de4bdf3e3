package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultGrace is how long an execution that stops (a signal, a store
// that failed a write, leases lost) gives its nodes to stop and the store
// to take where the run stopped, before it gives up on both.
const DefaultGrace = 2 * time.Second

// lastWrite is the least time the final records (the run's status, the
// leases given back) get after the grace, when the grace went to nodes
// that were slow to stop, so that a store that answers still gets them.
const lastWrite = 500 * time.Millisecond

// grace is the window of an execution's stop. Until it starts, writes are
// bounded only by their own deadlines; once started, every write derived
// from ctx ends with it.
type grace struct {
	ctx    context.Context // ends d after the start
	cancel context.CancelFunc
	d      time.Duration
	once   sync.Once
	end    atomic.Int64 // Unix nanoseconds; 0 until the start
}

// newGrace is a grace of d, not yet started, whose context outlives
// parent's cancellation (a signal) and keeps its values.
func newGrace(parent context.Context, d time.Duration) *grace {
	g := &grace{d: d}
	g.ctx, g.cancel = context.WithCancel(context.WithoutCancel(parent))
	return g
}

// start starts the window, once.
func (g *grace) start() {
	g.once.Do(func() {
		g.end.Store(time.Now().Add(g.d).UnixNano())
		time.AfterFunc(g.d, g.cancel)
	})
}

func (g *grace) started() bool { return g.end.Load() != 0 }

// last is the context of the final records of a stop: until the window
// ends, and at least lastWrite from now.
func (g *grace) last() (context.Context, context.CancelFunc) {
	until := time.Now().Add(lastWrite)
	if end := time.Unix(0, g.end.Load()); end.After(until) {
		until = end
	}
	return context.WithDeadline(context.WithoutCancel(g.ctx), until)
}

func (x *Executor) grace() time.Duration {
	if x.Grace > 0 {
		return x.Grace
	}
	return DefaultGrace
}
