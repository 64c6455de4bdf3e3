package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// TestOpenWhileAnotherHoldsTheWriteLock: a process that holds the SQLite
// write lock (an owner stopped in the middle of a write) does not keep
// others from opening the store and reading it.
func TestOpenWhileAnotherHoldsTheWriteLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, sampleRun("r1", time.Now())); err != nil {
		t.Fatal(err)
	}
	s.Close()

	holder, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	conn, err := holder.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, `ROLLBACK`)

	start := time.Now()
	r, err := store.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("open while another holds the write lock: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	}
	defer r.Close()
	runs, err := r.Runs(ctx, pipeline.RunFilter{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs while another holds the write lock: %v %v", runs, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("open and read took %s: they waited for the write lock", d)
	}
}
