package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sweepboard/release/pipeline"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"lock not available", &pgconn.PgError{Code: "55P03"}, true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"idle transaction ended", &pgconn.PgError{Code: "25P03"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"undefined table", &pgconn.PgError{Code: "42P01"}, false},
		{"bad connection", fmt.Errorf("exec: %w", driver.ErrBadConn), true},
		{"cut", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"attempt timed out", &attemptTimeout{what: "answer", bound: time.Second, err: context.DeadlineExceeded}, true},
		{"cancelled", context.Canceled, false},
		{"lease lost", fmt.Errorf("run/x: %w", pipeline.ErrLeaseLost), false},
		{"not found", pipeline.ErrNotFound, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newCalls(Options{}).policy
			if got := p.Judge(c.err); got.Retry != c.retry {
				t.Errorf("Judge(%v).Retry = %v (%s), want %v", c.err, got.Retry, got.Reason, c.retry)
			}
		})
	}
}

// TestFailedNamesTheStore: a failure of the store itself names it (never
// its password) and the call; an answer of the store is passed on as is.
func TestFailedNamesTheStore(t *testing.T) {
	loc, err := Parse("postgres://u:hunter2-pw@db.example:5432/x?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	s := &DB{dialect: postgres, name: loc.Shown, loc: loc}
	err = s.failed("record nodes of run r1", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("password hunter2-pw refused")}, true)
	var se *pipeline.StoreError
	if !errors.As(err, &se) {
		t.Fatalf("failed = %T %v, want a *pipeline.StoreError", err, err)
	}
	if want := "state store postgres://u:***@db.example:5432/x?sslmode=disable: record nodes of run r1: dial tcp: password *** refused"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	held := &pipeline.HeldError{Name: "env/prod", Holder: "x"}
	if got := s.failed("acquire lease env/prod", held, true); got != held {
		t.Errorf("failed(HeldError) = %v, want it as is", got)
	}
	if got := s.failed("renew lease run/r1", pipeline.ErrLeaseLost, true); !errors.Is(got, pipeline.ErrLeaseLost) || errors.As(got, &se) {
		t.Errorf("failed(ErrLeaseLost) = %v, want the answer, not a store failure", got)
	}
}
