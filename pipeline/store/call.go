package store

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Options say how a store reaches its server and how long its calls try.
// The zero Options are the defaults.
type Options struct {
	// Deadlines bound each connect to PostgreSQL (Connect, the TLS
	// handshake and the startup included), any silence of an open
	// connection while a statement waits for its answer (Idle), and each
	// attempt of a store call (FirstByte). Zero bounds are the defaults of
	// package deadline: the pipeline file's timeouts block sets them.
	Deadlines deadline.Deadlines
	// Budget bounds one store call, its retries and their waits included,
	// when the caller's context has no earlier deadline; 0 is three times
	// Deadlines.Connect (30 s by default).
	Budget time.Duration
	// SlowAfter is how long a call waits before Notify is told that it
	// waits (a lock held by another session, a server that does not
	// answer); 0 is 5 s.
	SlowAfter time.Duration
	// Notify, when set, is told of each call that waits longer than
	// SlowAfter (and again at each doubling of the wait), with why: the
	// last attempt's failure, or no answer yet. A line for people.
	Notify func(string)
}

// DefaultSlowAfter is how long a store call waits before it says so.
const DefaultSlowAfter = 5 * time.Second

// calls is how a DB makes its calls: the bounds, the retry policy, the
// reports.
type calls struct {
	attempt   time.Duration // one attempt of a call
	connect   time.Duration // one connect
	policy    retry.Policy
	slowAfter time.Duration
	notify    func(string)
}

func newCalls(o Options) calls {
	d := o.Deadlines.Or(deadline.Deadlines{})
	c := calls{
		attempt:   d.FirstByte,
		connect:   d.Connect,
		slowAfter: cmp.Or(o.SlowAfter, DefaultSlowAfter),
		notify:    o.Notify,
		policy: retry.Policy{
			Attempts:   5,
			Backoff:    500 * time.Millisecond,
			MaxBackoff: 4 * time.Second,
			Budget:     cmp.Or(o.Budget, 3*d.Connect),
			Classify:   []retry.Classifier{classify},
		},
	}
	return c
}

// attemptTimeout is an attempt of a store call that ran into a bound of
// its own (the connect's, or one attempt's), while the call may go on.
type attemptTimeout struct {
	what  string // "connection", "answer"
	bound time.Duration
	err   error
}

func (e *attemptTimeout) Error() string { return e.err.Error() }

func (e *attemptTimeout) reason() string {
	return fmt.Sprintf("no %s within %s", e.what, e.bound)
}

func (e *attemptTimeout) Unwrap() error { return e.err }

// classify is the store's transient-error classifier: a connection that
// broke, was refused, or was never used (pgconn.SafeToRetry), an attempt
// with no answer, a server that restarts or ends the session, a
// serialization failure or deadlock (the transaction is rolled back
// whole), a lock not had in time, a SQLite file busy with another
// process's write. Every call of the store is safe to try again: its
// writes are idempotent or check what a first attempt left. The network
// errors below these are left to retry.Classify.
func classify(err error) (retry.Verdict, bool) {
	transient := func(reason string) (retry.Verdict, bool) { return retry.Verdict{Retry: true, Reason: reason}, true }
	var at *attemptTimeout
	if errors.As(err, &at) {
		return transient(at.reason())
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"):
			return transient("connection failed (" + pgErr.Code + ")")
		case strings.HasPrefix(pgErr.Code, "57P"):
			return transient("the server ended the session (" + pgErr.Code + ")")
		case pgErr.Code == "25P03":
			// The server ended a session that sat in a transaction
			// (idleInTransaction): a process stopped in the middle.
			return transient("the server ended an idle transaction")
		case pgErr.Code == "40001", pgErr.Code == "40P01":
			return transient("serialization failure or deadlock (" + pgErr.Code + ")")
		case pgErr.Code == "55P03":
			return transient("lock not available")
		case pgErr.Code == "53300":
			return transient("too many connections")
		}
		return retry.Final, true
	}
	switch sqliteCode(err) {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return transient("the file is busy with another write")
	}
	var se *sqlitedrv.Error
	if errors.As(err, &se) {
		return retry.Final, true
	}
	switch {
	case errors.Is(err, driver.ErrBadConn):
		return transient("connection dropped")
	case pgconn.SafeToRetry(err):
		return transient("connection failed before the statement was sent")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return transient("connection cut")
	case pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded):
		return transient("timed out")
	}
	return retry.Verdict{}, false
}

// do runs one call of the store, what naming it ("record nodes of run
// X"): each attempt bounded by the attempt bound, attempts retried with
// backoff within the budget (or the caller's deadline, when earlier), and a
// call that waits long reported. A failure comes back as failed makes it.
func (s *DB) do(ctx context.Context, what string, f func(ctx context.Context) error) error {
	return s.failed(what, s.try(ctx, what, f), true)
}

// try is do without its last step: the error is the call's own.
func (s *DB) try(ctx context.Context, what string, f func(ctx context.Context) error) error {
	w := s.slow(what)
	defer w.stop()
	p := s.calls.policy
	p.Report = w.failed
	return p.Do(ctx, "state store "+s.name+": "+what, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, s.calls.attempt)
		defer cancel()
		err := f(actx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// A deadline of this attempt's own, not the call's: the connect's
		// (pgx's connect_timeout) or the attempt's.
		var ce *pgconn.ConnectError
		switch {
		case errors.As(err, &ce) && errors.Is(err, context.DeadlineExceeded) && actx.Err() == nil:
			return &attemptTimeout{what: "connection", bound: s.calls.connect, err: err}
		case errors.Is(actx.Err(), context.DeadlineExceeded):
			return &attemptTimeout{what: "answer", bound: s.calls.attempt, err: err}
		}
		return err
	})
}

// read is do for a call that returns a value. Its answers (no such run)
// name what they are about already.
func read[T any](ctx context.Context, s *DB, what string, f func(ctx context.Context) (T, error)) (T, error) {
	var v T
	err := s.try(ctx, what, func(ctx context.Context) error {
		var err error
		v, err = f(ctx)
		return err
	})
	return v, s.failed(what, err, false)
}

// tx runs f in a transaction, as one call of the store (do): an attempt
// that failed is rolled back whole and run again on a fresh connection.
func (s *DB) tx(ctx context.Context, what string, f func(ctx context.Context, tx *sql.Tx) error) error {
	return s.txGuard(ctx, what, false, f)
}

// wtx is tx for a write that a Fenced view guards.
func (s *DB) wtx(ctx context.Context, what string, f func(ctx context.Context, tx *sql.Tx) error) error {
	return s.txGuard(ctx, what, true, f)
}

func (s *DB) txGuard(ctx context.Context, what string, guarded bool, f func(ctx context.Context, tx *sql.Tx) error) error {
	return s.do(ctx, what, func(ctx context.Context) error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if guarded && s.guard != nil {
			if err := s.checkGuard(ctx, tx); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := f(ctx, tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

// failed is the error of call what as its caller gets it: nil; the store
// itself failing (it did not answer in time or at all, its connection
// broke, its server or its file reported an error) as a
// *pipeline.StoreError that names the store; anything else is an answer
// (no such run, a lease held or lost, a release that changed, a version
// taken, an ambiguous prefix), passed on as is, under what when under is
// set.
func (s *DB) failed(what string, err error, under bool) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	var sqErr *sqlitedrv.Error
	var held *pipeline.HeldError
	storeFailed := !errors.As(err, &held) && !uniqueViolation(err) &&
		(s.calls.policy.Judge(err).Retry || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
			errors.As(err, &pgErr) || errors.As(err, &sqErr) || errors.Is(err, driver.ErrBadConn))
	if !storeFailed {
		if !under || errors.As(err, &held) {
			return err
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.dialect == sqlite {
		switch {
		case sqliteCode(err) == sqlite3.SQLITE_FULL, errors.As(err, &sqErr) && sqErr.Code() == sqlite3.SQLITE_IOERR_SHMSIZE:
			err = fmt.Errorf("%w: %w", ErrNoSpace, err)
		case sqliteCode(err) == sqlite3.SQLITE_CORRUPT, sqliteCode(err) == sqlite3.SQLITE_NOTADB:
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
	}
	return &pipeline.StoreError{Store: s.name, Op: what, Err: s.scrub(err)}
}

// waiter watches one call: it tells Notify when the call waits longer
// than SlowAfter, then again at each doubling of the wait, until stop.
type waiter struct {
	mu      sync.Mutex
	start   time.Time
	t       *time.Timer
	stopped bool
	last    string // the last attempt's failure; "" while none failed
}

func (s *DB) slow(what string) *waiter {
	w := &waiter{start: time.Now()}
	if s.calls.notify == nil {
		return w
	}
	var arm func(after time.Duration)
	arm = func(after time.Duration) {
		w.t = time.AfterFunc(after, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.stopped {
				return
			}
			waited := time.Since(w.start)
			shown := waited.Round(time.Second)
			if waited < time.Second {
				shown = waited.Round(10 * time.Millisecond)
			}
			why := "no answer yet: a lock held by another session, or a server that does not answer?"
			if w.last != "" {
				why = "the last attempt failed (" + w.last + "); trying again"
			}
			s.calls.notify(fmt.Sprintf("state store slow: waiting %s for %s (%s): %s", shown, what, s.name, why))
			arm(waited) // next at twice the wait so far
		})
	}
	w.mu.Lock()
	arm(s.calls.slowAfter)
	w.mu.Unlock()
	return w
}

// failed notes an attempt's failure, for the next report.
func (w *waiter) failed(r retry.Wait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = r.Reason
}

func (w *waiter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
}
