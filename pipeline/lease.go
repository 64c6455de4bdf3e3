package pipeline

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// heldLocks are the leases of one executing run, kept alive by a heartbeat.
type heldLocks struct {
	store  Store
	ttl    time.Duration
	leases []*Lease
	stop   chan struct{}
	done   chan struct{}
	lost   chan struct{} // closed when a renewal fails

	mu      sync.Mutex
	expires time.Time // the earliest expiry of the leases as last renewed
	gone    bool
	// unconfirmed is set when a renewal could not reach the store: the
	// leases may still be ours, but nothing new starts until a renewal
	// succeeds again.
	unconfirmed bool
}

// acquire takes the executor's locks in name order (so two runs wanting the
// same ones cannot deadlock), waiting for them when x.Wait is set.
func (x *Executor) acquire(ctx context.Context, holder string) (*heldLocks, error) {
	ttl := x.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	h := &heldLocks{store: x.Store, ttl: ttl, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	names := slices.Clone(x.Locks)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		close(h.done)
		h.expires = time.Now().Add(100 * 365 * 24 * time.Hour)
		return h, nil
	}
	for _, name := range names {
		for {
			l, err := x.Store.AcquireLease(ctx, name, holder, ttl)
			if err == nil {
				h.leases = append(h.leases, l)
				break
			}
			var held *HeldError
			if !errors.As(err, &held) || !x.Wait {
				h.releaseAll()
				return nil, err
			}
			select {
			case <-ctx.Done():
				h.releaseAll()
				return nil, ErrInterrupted
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	h.setExpires()
	go h.heartbeat()
	return h, nil
}

func (h *heldLocks) setExpires() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expires = time.Time{}
	for _, l := range h.leases {
		if h.expires.IsZero() || l.Expires.Before(h.expires) {
			h.expires = l.Expires
		}
	}
}

func (h *heldLocks) heartbeat() {
	defer close(h.done)
	t := time.NewTicker(h.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			ok := true
			for _, l := range h.leases {
				if err := h.store.RenewLease(context.Background(), l, h.ttl); err != nil {
					h.mu.Lock()
					lostNow := !h.gone && errors.Is(err, ErrLeaseLost)
					if lostNow {
						h.gone = true
					}
					h.mu.Unlock()
					if lostNow {
						close(h.lost)
						return
					}
					// The store did not answer: until a renewal gets
					// through, the leases are not confirmed, and when
					// their expiry passes they are gone.
					h.mu.Lock()
					h.unconfirmed = true
					h.mu.Unlock()
					ok = false
					break
				}
			}
			if ok {
				h.setExpires()
				h.mu.Lock()
				h.unconfirmed = false
				h.mu.Unlock()
			}
		}
	}
}

// valid reports whether every lock is held and confirmed: not lost, not
// expired, and the last renewal reached the store.
func (h *heldLocks) valid() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.gone && !h.unconfirmed && time.Now().Before(h.expires)
}

// expiry is the earliest expiry of the leases as last renewed; zero when
// there are none.
func (h *heldLocks) expiry() time.Time {
	if len(h.leases) == 0 {
		return time.Time{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expires
}

// held reports whether there are locks at all.
func (h *heldLocks) held() bool { return len(h.leases) > 0 }

// over reports whether the locks are lost for good: taken by someone else,
// or expired without a renewal.
func (h *heldLocks) over() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gone || !time.Now().Before(h.expires)
}

// fence confirms the locks with the store itself, for a stage about to make
// an external side effect.
func (h *heldLocks) fence(ctx context.Context) error {
	if !h.valid() {
		return ErrLockLost
	}
	for _, l := range h.leases {
		if err := h.store.RenewLease(ctx, l, h.ttl); err != nil {
			h.mu.Lock()
			h.unconfirmed = true
			h.mu.Unlock()
			return errors.Join(ErrLockLost, err)
		}
	}
	h.setExpires()
	h.mu.Lock()
	h.unconfirmed = false
	h.mu.Unlock()
	return nil
}

func (h *heldLocks) release() {
	if len(h.leases) > 0 {
		close(h.stop)
	}
	<-h.done
	h.releaseAll()
}

func (h *heldLocks) releaseAll() {
	for _, l := range h.leases {
		_ = h.store.ReleaseLease(context.Background(), l)
	}
}
