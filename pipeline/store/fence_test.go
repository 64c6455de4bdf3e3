package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// renewLog records when the holder's lease renewals got through or failed.
type renewLog struct {
	pipeline.Store
	mu     sync.Mutex
	events []renewEvent
}

type renewEvent struct {
	at time.Time
	ok bool
}

func (s *renewLog) RenewLease(ctx context.Context, l *pipeline.Lease, ttl time.Duration) error {
	err := s.Store.RenewLease(ctx, l, ttl)
	s.mu.Lock()
	s.events = append(s.events, renewEvent{at: time.Now(), ok: err == nil})
	s.mu.Unlock()
	return err
}

type stageFunc func(ctx context.Context, env *stages.Env) (stages.Outputs, error)

func (f stageFunc) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	return f(ctx, env)
}

// TestHolderConnectionKilled kills the lease holder's PostgreSQL
// connections (pg_terminate_backend) while a node runs. The next node, a
// side effect, starts only after the lease was confirmed again over a new
// connection, and the run finishes without a resume.
func TestHolderConnectionKilled(t *testing.T) {
	pg := openPostgres(t)
	st := &renewLog{Store: pg}
	killed := make(chan struct{})
	var effectAt time.Time
	reg := &stages.Registry{}
	reg.Register(stages.Kind{Name: "wait", New: func() stages.Stage {
		return stageFunc(func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
			<-killed
			return nil, nil
		})
	}})
	reg.Register(stages.Kind{Name: "effect", New: func() stages.Stage {
		return stageFunc(func(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
			effectAt = time.Now()
			return nil, nil
		})
	}})
	src := "name: p\nenvironments: {staging: {}}\nstages:\n  a: {uses: wait, environment: staging}\n  b: {uses: effect, environment: staging, needs: [a]}\n"
	p, err := pipeline.Parse("p.yaml", filepath.Join(t.TempDir(), "p.yaml"), []byte(src), reg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		t.Fatal(err)
	}
	run := pipeline.NewRun("run", p, plan, time.Now())
	x := &pipeline.Executor{Store: st, Locks: []string{"env/staging"}, LeaseTTL: 6 * time.Second, PollCancel: 100 * time.Millisecond}
	done := make(chan error)
	go func() { done <- x.Start(context.Background(), p, plan, run) }()

	// Once a runs, cut every connection of this test process's stores
	// (named by openPostgres), and no one else's.
	admin, err := sql.Open("pgx", postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for {
		r, err := pg.Run(context.Background(), run.ID)
		if err == nil && r.Node("a").Status == pipeline.Running {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	killAt := time.Now()
	res, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE $1 ESCAPE '!'`, fmt.Sprintf("t!_%d!_%%", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatal("no connection was terminated")
	}
	close(killed)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	// The first renewal after the kill met a dead connection; the store
	// ran it again on a new one. Only a renewal that got through after the
	// kill lets the side effect start.
	var confirmedAt time.Time
	for _, e := range st.events {
		if e.ok && e.at.After(killAt) {
			confirmedAt = e.at
			break
		}
	}
	if confirmedAt.IsZero() || effectAt.IsZero() || !effectAt.After(confirmedAt) {
		t.Errorf("the side effect ran at %s, the lease was confirmed again at %s (killed at %s)",
			stamp(effectAt), stamp(confirmedAt), stamp(killAt))
	}
	r, err := pg.Run(context.Background(), run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != pipeline.Succeeded || r.Node("b").Attempts != 1 {
		t.Errorf("run %s, b attempted %d times; want succeeded, once", r.Status, r.Node("b").Attempts)
	}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return strings.TrimSuffix(t.Format("15:04:05.000"), "0")
}
