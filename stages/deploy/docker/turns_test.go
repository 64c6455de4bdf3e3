package docker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestTurns: while one holds the turn, the waiters go lowest rank first,
// whatever order they asked in; one whose context ends leaves the line.
func TestTurns(t *testing.T) {
	q := turns{width: 1}
	done, err := q.take(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := q.take(ctx, 0) // would go first, but leaves
		gone <- err
	}()
	for _, rank := range []int{7, 3, 9, 1, 3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := q.take(context.Background(), rank)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, rank)
			mu.Unlock()
			d()
		}()
	}
	for {
		q.mu.Lock()
		n := len(q.waiting)
		q.mu.Unlock()
		if n == 6 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("a waiter whose context ended got the turn")
	}
	done()
	wg.Wait()
	if want := []int{1, 3, 3, 7, 9}; !slices.Equal(order, want) {
		t.Fatalf("turns went %v, want %v", order, want)
	}
	if q.held != 0 || len(q.waiting) != 0 {
		t.Fatalf("left held=%v with %d waiting", q.held, len(q.waiting))
	}
}
