package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/sweepboard/release/fixtures/parts"
)

// flowPostgres is the team store fixtures/up.sh starts; RELEASE_TEST_POSTGRES
// overrides it.
func flowPostgres(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("RELEASE_TEST_POSTGRES")
	if dsn == "" {
		dsn = parts.PostgresDSN
	}
	db, err := sql.Open("pgx", dsn)
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		parts.Missing(t, "PostgreSQL at "+dsn, err)
	}
	defer db.Close()
	schema := fmt.Sprintf("flow_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if db, err := sql.Open("pgx", dsn); err == nil {
			db.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			db.Close()
		}
	})
	return dsn + "&search_path=" + schema
}

// TestFlowPostgres shares one PostgreSQL store between the processes: the
// whole flow, then two `release promote staging` started together 50 times,
// each from its own process.
func TestFlowPostgres(t *testing.T) {
	f := newFlow(t, "flowpg")
	f.state = flowPostgres(t)
	var first runView
	if !t.Run("whole-flow", func(t *testing.T) {
		f.t = t
		first = f.run(f.mustRelease("run", "--yes").id())
		if first.Status != "succeeded" {
			t.Fatalf("run %s: status %s", first.ID, first.Status)
		}
		f.checkStatus(f.status(), "prod", first.Version, first.Images)
	}) {
		t.Fatal("the whole flow failed on PostgreSQL")
	}
	t.Run("concurrent-promote", func(t *testing.T) {
		f.t = t
		f.promoteRace(t, 50, first)
	})
}
