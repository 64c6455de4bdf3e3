package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sweepboard/release/stages"
)

// heldLocks are the leases of one execution of a run: its claim
// ("run/ID") and the locks of its environments, all held by one owner and
// kept alive by a heartbeat. Losing any of them (taken over, or expired
// without a renewal that got through) closes lost, within one heartbeat.
type heldLocks struct {
	store  Store
	ttl    time.Duration
	claim  *Lease
	leases []*Lease // the claim first, then the environment locks
	stop   chan struct{}
	done   chan struct{}
	// bg is the context of the heartbeat's renewals: release ends it, so
	// that a renewal the store does not answer holds nothing up.
	bg     context.Context
	stopBg context.CancelFunc
	lost   chan struct{} // closed once, when the leases are lost
	lose   sync.Once
	// renewing serialises renewals: the heartbeat and the fences of nodes
	// running in parallel renew the same leases.
	renewing sync.Mutex

	mu      sync.Mutex
	expires time.Time // the earliest expiry of the leases as last renewed
	gone    bool
	// unconfirmed is set when a renewal could not reach the store: the
	// leases may still be ours, but nothing new starts until a renewal
	// succeeds again.
	unconfirmed bool
}

// margin is how long before a lease's expiry its holder treats it as gone:
// a renewal that has not got through by then will not in time.
func (h *heldLocks) margin() time.Duration { return h.ttl / 10 }

// acquire takes the run's claim, then the executor's locks in name order
// (so two runs wanting the same ones cannot deadlock), all for holder,
// waiting for them when x.Wait is set.
func (x *Executor) acquire(ctx context.Context, holder, runID string) (*heldLocks, error) {
	ttl := x.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	h := &heldLocks{store: x.Store, ttl: ttl, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	h.bg, h.stopBg = context.WithCancel(context.WithoutCancel(ctx))
	// Giving back what was taken when the rest cannot be had: within the
	// grace of a stop, whatever ctx says.
	giveBack := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.grace())
		defer cancel()
		h.releaseAll(rctx)
		h.stopBg()
	}
	names := slices.Clone(x.Locks)
	slices.Sort(names)
	names = append([]string{ClaimPrefix + runID}, slices.Compact(names)...)
	for _, name := range names {
		for {
			l, err := x.Store.AcquireLease(ctx, name, holder, ttl)
			var held *HeldError
			if errors.As(err, &held) && ParseHolder(held.Holder).RunID == runID && ownerDead(held.Holder) {
				// An earlier owner of this same run died on this host
				// (kill -9, a crash): its leases need not run out before
				// the resume goes on. Another run waits for them to lapse.
				l, err = x.Store.TakeOverLease(ctx, name, held.Holder, holder, ttl)
			}
			if err == nil {
				h.leases = append(h.leases, l)
				break
			}
			if !errors.As(err, &held) || !x.Wait {
				giveBack()
				return nil, err
			}
			select {
			case <-ctx.Done():
				giveBack()
				return nil, ErrInterrupted
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	h.claim = h.leases[0]
	// The first leases may have aged while later ones were waited for:
	// renew them all before anything relies on them.
	if err := h.renewBy(ctx, time.Now().Add(ttl/3)); err != nil {
		giveBack()
		if errors.Is(err, ErrLeaseLost) {
			return nil, fmt.Errorf("%w while waiting for the other locks", err)
		}
		return nil, err
	}
	go h.heartbeat()
	return h, nil
}

// ownerDead reports whether the holder of a lease is a process of this host
// that is gone (or a zombie): it will never renew or release its leases.
// Any doubt (another host, a process that lives, no pid) says no, and the
// lease must expire.
func ownerDead(holder string) bool {
	o := ParseHolder(holder)
	host, _ := os.Hostname()
	if o.PID <= 0 || o.Host == "" || o.Host != host || o.PID == os.Getpid() {
		return false
	}
	err := syscall.Kill(o.PID, 0)
	if errors.Is(err, syscall.ESRCH) {
		return true
	}
	if err != nil {
		return false // EPERM: it lives, as another user
	}
	stat, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", o.PID))
	if rerr != nil {
		return false
	}
	// The state follows the command name in parentheses: "Z" is a zombie.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z'
	}
	return false
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

func (h *heldLocks) markLost() {
	h.mu.Lock()
	h.gone = true
	h.mu.Unlock()
	h.lose.Do(func() { close(h.lost) })
}

// renew renews every lease once, within the time the leases have left.
func (h *heldLocks) renew(ctx context.Context) error {
	deadline := h.expiry().Add(-h.margin())
	if d := time.Now().Add(h.ttl / 3); d.Before(deadline) {
		deadline = d
	}
	return h.renewBy(ctx, deadline)
}

func (h *heldLocks) renewBy(ctx context.Context, deadline time.Time) error {
	h.renewing.Lock()
	defer h.renewing.Unlock()
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for _, l := range h.leases {
		if err := h.store.RenewLease(rctx, l, h.ttl); err != nil {
			if errors.Is(err, ErrLeaseLost) {
				h.markLost()
			} else {
				h.mu.Lock()
				h.unconfirmed = true
				h.mu.Unlock()
			}
			return err
		}
	}
	h.setExpires()
	h.mu.Lock()
	h.unconfirmed = false
	h.mu.Unlock()
	return nil
}

// heartbeat renews the leases every ttl/3, and declares them lost when one
// was taken over, or when their expiry comes near without a renewal that
// got through: from then on another owner may take them.
func (h *heldLocks) heartbeat() {
	defer close(h.done)
	t := time.NewTicker(h.ttl / 3)
	defer t.Stop()
	for {
		expiry := time.NewTimer(time.Until(h.expiry().Add(-h.margin())))
		select {
		case <-h.stop:
			expiry.Stop()
			return
		case <-expiry.C:
			h.markLost()
			return
		case <-t.C:
			expiry.Stop()
			if err := h.renew(h.bg); err != nil && h.over() {
				h.markLost()
				return
			}
		}
	}
}

// expiry is the earliest expiry of the leases as last renewed.
func (h *heldLocks) expiry() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expires
}

// safeUntil is when work that outlives this process must have stopped: a
// margin before the leases' expiry, so that clocks a little apart on the
// holder and the next owner still give no overlap. Zero without leases.
func (h *heldLocks) safeUntil() time.Time {
	e := h.expiry()
	if e.IsZero() {
		return e
	}
	return e.Add(-h.margin())
}

// valid reports whether every lease is held and confirmed: not lost, not
// near its expiry, and the last renewal reached the store.
func (h *heldLocks) valid() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.gone && !h.unconfirmed && time.Now().Before(h.expires.Add(-h.margin()))
}

// over reports whether the leases are lost for good: taken by someone
// else, or so near their expiry that another owner may take them.
func (h *heldLocks) over() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gone || !time.Now().Before(h.expires.Add(-h.margin()))
}

// fence confirms the leases with the store itself, for a stage about to
// make an external side effect. Its error wraps stages.ErrFenced.
func (h *heldLocks) fence(ctx context.Context) error {
	if !h.valid() {
		return fmt.Errorf("%s: %w", h.claim.Name, stages.ErrFenced)
	}
	if err := h.renew(ctx); err != nil {
		return fmt.Errorf("%w: %w", stages.ErrFenced, err)
	}
	return nil
}

// release stops the heartbeat and gives the leases back within ctx. It
// reports whether they are free now or were lost anyway; false says they
// stay held until they lapse, within one TTL.
func (h *heldLocks) release(ctx context.Context) bool {
	h.stopBg()
	close(h.stop)
	<-h.done
	if h.over() {
		// Lost or expired: there is nothing to give back, and the store
		// may be what did not answer.
		return true
	}
	return h.releaseAll(ctx)
}

// releaseAll gives back every lease taken, each within 5 s and all within
// ctx, and reports whether every one got through.
func (h *heldLocks) releaseAll(ctx context.Context) bool {
	ok := true
	for _, l := range h.leases {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := h.store.ReleaseLease(rctx, l); err != nil {
			ok = false
		}
		cancel()
	}
	return ok
}
