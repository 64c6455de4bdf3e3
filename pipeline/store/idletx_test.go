package store_test

import (
	"context"
	"database/sql"
	"testing"
	"time"
)

// TestIdleTransactionEnded: a PostgreSQL session of the store that sits in
// a transaction (its process stopped, or cut off from the server, between
// two statements) is ended by the server within seconds, so that what it
// locked (a lease's row, which a takeover waits for) does not stay locked
// until the server finds the connection dead; the process, once it goes
// on, redoes the transaction on a fresh session. The transaction here
// sits in AllocateVersion's pick, between its read and its insert.
func TestIdleTransactionEnded(t *testing.T) {
	s := openPostgres(t)
	admin, err := sql.Open("pgx", postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// idle counts the sessions of this test's cluster that sit in a
	// transaction after AllocateVersion's read.
	idle := func() int {
		var n int
		err := admin.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND state = 'idle in transaction' AND query LIKE 'SELECT version, run_id FROM versions WHERE pipeline = %'`).Scan(&n)
		if err != nil {
			t.Fatalf("read pg_stat_activity: %v", err)
		}
		return n
	}
	before := idle()

	inPick := make(chan struct{})
	release := make(chan struct{})
	picks := 0
	var got string
	done := make(chan error, 1)
	go func() {
		var err error
		got, err = s.AllocateVersion(context.Background(), "idle", "run-1", func([]string) (string, error) {
			picks++
			if picks == 1 {
				close(inPick)
				<-release // the process stops here
			}
			return "1.0.0", nil
		})
		done <- err
	}()
	<-inPick
	start := time.Now()
	if idle() <= before {
		t.Fatal("the transaction does not sit idle on the server: the test measures nothing")
	}
	var ended time.Duration
	for idle() > before {
		if time.Since(start) > 30*time.Second {
			close(release)
			t.Fatalf("the server still keeps the idle transaction %s later", time.Since(start).Round(time.Second))
		}
		time.Sleep(50 * time.Millisecond)
	}
	ended = time.Since(start)
	close(release)
	err = <-done
	t.Logf("the server ended the idle transaction after %s; AllocateVersion then gave %q, %v, after %d picks", ended.Round(10*time.Millisecond), got, err, picks)
	if ended > 10*time.Second {
		t.Errorf("the idle transaction was ended after %s, want within 10 s", ended)
	}
	if err != nil || got != "1.0.0" || picks != 2 {
		t.Errorf("AllocateVersion = %q, %v after %d picks; want 1.0.0 from a second transaction", got, err, picks)
	}
}
