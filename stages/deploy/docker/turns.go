package docker

import (
	"cmp"
	"context"
	"slices"
	"sync"
)

// turns lets up to width holders at a time through, the waiter of the
// lowest rank first.
//
// Nobody waits for a rank that never asks: a waiter goes as soon as a
// holder is done and no lower rank is waiting.
type turns struct {
	width   int
	mu      sync.Mutex
	held    int
	waiting []*turn // by rank, lowest first
}

type turn struct {
	rank  int
	ready chan struct{}
}

// take waits for the turn of rank and takes it; done gives it back.
func (q *turns) take(ctx context.Context, rank int) (done func(), err error) {
	q.mu.Lock()
	if q.held < max(q.width, 1) {
		q.held++
		q.mu.Unlock()
		return q.give, nil
	}
	w := &turn{rank: rank, ready: make(chan struct{})}
	i, _ := slices.BinarySearchFunc(q.waiting, rank+1, func(o *turn, r int) int { return cmp.Compare(o.rank, r) })
	q.waiting = slices.Insert(q.waiting, i, w)
	q.mu.Unlock()
	select {
	case <-w.ready:
		return q.give, nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		if j := slices.Index(q.waiting, w); j >= 0 {
			q.waiting = slices.Delete(q.waiting, j, j+1)
			return nil, ctx.Err()
		}
		// Handed the turn as the context ended: pass it on.
		q.passLocked()
		return nil, ctx.Err()
	}
}

// give hands the turn to the lowest rank waiting, or frees it.
func (q *turns) give() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.passLocked()
}

func (q *turns) passLocked() {
	if len(q.waiting) == 0 {
		q.held--
		return
	}
	w := q.waiting[0]
	q.waiting = q.waiting[1:]
	close(w.ready)
}
