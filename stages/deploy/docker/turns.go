package docker

import (
	"context"
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
	i := 0
	for i < len(q.waiting) && q.waiting[i].rank <= rank {
		i++
	}
	q.waiting = append(q.waiting, nil)
	copy(q.waiting[i+1:], q.waiting[i:])
	q.waiting[i] = w
	q.mu.Unlock()
	select {
	case <-w.ready:
		return q.give, nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		for j, o := range q.waiting {
			if o == w {
				q.waiting = append(q.waiting[:j], q.waiting[j+1:]...)
				return nil, ctx.Err()
			}
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
