package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// TestReadsAfterConnectionsKilled cuts the store's PostgreSQL connections
// (pg_terminate_backend, as a restart or a failover does) while they sit
// in its pool: every read then answers from a fresh connection, as every
// write does, instead of failing once per pooled connection.
func TestReadsAfterConnectionsKilled(t *testing.T) {
	openPostgres(t) // fails or skips without PostgreSQL
	ctx := context.Background()
	admin, err := sql.Open("pgx", postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// The store's connections carry a name of their own: only they are
	// cut, not those of tests running beside this one.
	name := fmt.Sprintf("reconnect_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+name+" CASCADE") })
	s, err := store.OpenPostgres(ctx, postgresDSN()+"&search_path="+name+"&application_name="+name)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateRun(ctx, sampleRun("r1", time.Now())); err != nil {
		t.Fatal(err)
	}
	rel := &pipeline.Release{Version: "1.2.0", Pipeline: "p", RunID: "r1", Commits: map[string]string{}, Images: map[string]string{}, CreatedAt: time.Now()}
	if err := s.RecordRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}

	reads := []struct {
		name string
		read func() error
	}{
		{"Run", func() error { _, err := s.Run(ctx, "r1"); return err }},
		{"Runs", func() error { _, err := s.Runs(ctx, pipeline.RunFilter{}); return err }},
		{"Logs", func() error { _, err := s.Logs(ctx, "r1", ""); return err }},
		{"Release", func() error { _, err := s.Release(ctx, "1.2.0"); return err }},
		{"Deployments", func() error { _, err := s.Deployments(ctx, "", 0); return err }},
	}
	for _, r := range reads {
		t.Run(r.name, func(t *testing.T) {
			// Two reads at once leave two connections in the pool.
			done := make(chan error, 2)
			for range 2 {
				go func() { done <- r.read() }()
			}
			for range 2 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			res, err := admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, name)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				t.Fatal("the store had no connection to cut")
			}
			// pg_terminate_backend only asks; the connections end soon after.
			time.Sleep(100 * time.Millisecond)
			for i := range 3 {
				if err := r.read(); err != nil {
					t.Errorf("read %d after the store's connections were cut: %v", i+1, err)
				}
			}
		})
	}
}
