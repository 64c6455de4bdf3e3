package store_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/store"
)

// notes collects what a store tells its Notify.
type notes struct {
	mu    sync.Mutex
	lines []string
}

func (n *notes) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, s)
}

func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.lines...)
}

func (n *notes) has(sub string) bool {
	for _, l := range n.all() {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// TestSlowCallReported holds a lock on the nodes table from another
// session while the store records a node: the write waits, and says so
// once it has waited longer than SlowAfter, then goes through once the
// lock is let go.
func TestSlowCallReported(t *testing.T) {
	ctx := context.Background()
	schema := postgresSchema(t, "slow")
	var told notes
	s, err := store.OpenWith(ctx, postgresDSN()+"&search_path="+schema, store.Options{SlowAfter: 300 * time.Millisecond, Notify: told.add})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := sampleRun("r1", time.Now())
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("pgx", postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	lock, err := admin.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, "LOCK TABLE "+schema+".nodes IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		r.Nodes[0].Status = pipeline.Running
		done <- s.SaveNodes(ctx, r.ID, r.Nodes[0])
	}()
	deadline := time.Now().Add(10 * time.Second)
	// On a busy machine the open and the first write may be slow too: the
	// word looked for is the one about the locked write.
	for !told.has("for record nodes of run r1") {
		if time.Now().After(deadline) {
			t.Fatalf("no word of the wait 10 s into it; told: %q", told.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("SaveNodes returned %v while the table is locked", err)
	default:
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("SaveNodes after the lock was let go: %v", err)
	}
	t.Logf("told: %q", told.all())
	var got string
	for _, l := range told.all() {
		if strings.Contains(l, "for record nodes of run r1") {
			got = l
			break
		}
	}
	if !strings.HasPrefix(got, "state store slow: waiting ") || !strings.Contains(got, "for record nodes of run r1 (postgres://release:***@") {
		t.Errorf("first word of the wait = %q, want it to name the call and the store, its password hidden", got)
	}
}

// TestOpenUnreachable opens a PostgreSQL store that refuses connections,
// and one that accepts them and never answers: each fails within its
// budget (three connect bounds) with an error that names the store, never
// its password.
func TestOpenUnreachable(t *testing.T) {
	const password = "pw-s3cr3t-42"
	refused := func(t *testing.T) string { return parts.RefusedAddr(t) }
	silent := func(t *testing.T) string { return parts.SilentPeer(t) }
	const connect = 500 * time.Millisecond
	budget := 3 * connect
	for _, c := range []struct {
		name   string
		listen func(*testing.T) string
		want   string
	}{
		{"refused", refused, "connection refused"},
		{"black-holed", silent, "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := c.listen(t)
			dsn := "postgres://release:" + password + "@" + addr + "/release_test?sslmode=disable"
			var told notes
			start := time.Now()
			s, err := store.OpenWith(context.Background(), dsn, store.Options{Deadlines: deadline.Deadlines{Connect: connect}, Notify: told.add})
			took := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatal("the store opened")
			}
			t.Logf("failed after %s: %v; told: %q", took.Round(time.Millisecond), err, told.all())
			msg := err.Error() + strings.Join(told.all(), "\n")
			if !strings.HasPrefix(err.Error(), "open state store postgres://release:***@"+addr+"/release_test?sslmode=disable: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %q, want it to name the store without its password, and say %q", err, c.want)
			}
			if strings.Contains(msg, password) {
				t.Errorf("the password shows: %s", msg)
			}
			// The budget bounds the whole call; a second of slack for a
			// loaded machine.
			if took > budget+time.Second {
				t.Errorf("open failed after %s, want within its budget of %s", took, budget)
			}
			var se *pipeline.StoreError
			if errors.As(err, &se) {
				t.Errorf("open's error is a StoreError (%v): it has no run to resume", se)
			}
		})
	}
}
