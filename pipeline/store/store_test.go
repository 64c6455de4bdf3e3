package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// opener opens a fresh, empty store for one test.
type opener func(t *testing.T) pipeline.Store

// postgresDSN is the test cluster fixtures/up.sh starts; RELEASE_TEST_POSTGRES
// overrides it.
func postgresDSN() string {
	if dsn := os.Getenv("RELEASE_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://release:release@127.0.0.1:5432/release_test?sslmode=disable"
}

var schemaSeq atomic.Int64

// stores are the implementations the conformance suite runs against. Each
// PostgreSQL test gets a schema of its own, so tests start empty.
func stores(t *testing.T) map[string]opener {
	return map[string]opener{
		"sqlite": func(t *testing.T) pipeline.Store {
			s, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t *testing.T) pipeline.Store {
			return openPostgres(t)
		},
	}
}

// postgresSchema makes a schema of its own for a test on the PostgreSQL
// server, dropped when the test ends, and returns its name. Without the
// server the test fails in CI and is skipped elsewhere.
func postgresSchema(t testing.TB, prefix string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := sql.Open("pgx", postgresDSN())
	if err == nil {
		err = admin.PingContext(ctx)
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at %s: %v (fixtures/up.sh starts it)", postgresDSN(), err)
		}
		t.Skipf("no PostgreSQL at %s: %v", postgresDSN(), err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), schemaSeq.Add(1))
	if _, err := admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a, err := sql.Open("pgx", postgresDSN()); err == nil {
			a.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			a.Close()
		}
	})
	return schema
}

func openPostgres(t testing.TB) *store.DB {
	t.Helper()
	ctx := context.Background()
	schema := postgresSchema(t, "t")
	// application_name lets a test cut this process's connections only:
	// other packages' tests share the server.
	dsn := postgresDSN() + "&search_path=" + schema + "&application_name=" + schema
	s, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			for _, c := range suite {
				t.Run(c.name, func(t *testing.T) { c.run(t, open(t)) })
			}
		})
	}
}

func sampleRun(id string, started time.Time) *pipeline.Run {
	return &pipeline.Run{
		ID: id, Kind: "run", Pipeline: "p", Version: "1.2.0", Status: pipeline.Pending, PlanHash: "abc",
		Commits: map[string]string{"api": "0123"}, Images: map[string]string{}, Params: map[string]string{"bump": "minor"},
		StartedAt: started.UTC(),
		Nodes: []*pipeline.Node{
			{ID: "build[api]", Stage: "build", Item: "api", Needs: []string{}, Status: pipeline.Pending, Outputs: stages.Outputs{}},
			{ID: "deploy", Stage: "deploy", Environment: "dev", Needs: []string{"build[api]"}, Status: pipeline.Pending, Outputs: stages.Outputs{}},
		},
	}
}

var timeEqual = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

var suite = []struct {
	name string
	run  func(t *testing.T, s pipeline.Store)
}{
	{"round trip", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		want := sampleRun("r1", time.Now())
		if err := s.CreateRun(ctx, want); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		want.Status, want.Images["api"] = pipeline.Succeeded, "reg/api@sha256:aa"
		want.FinishedAt = &now
		n := want.Nodes[0]
		n.Status, n.Attempts, n.Outputs, n.Error, n.StartedAt, n.FinishedAt = pipeline.Succeeded, 2, stages.Outputs{"image": "x"}, "", &now, &now
		n.Approval = &stages.Approval{By: "alice", At: now, UpFront: true}
		if err := s.SaveNodes(ctx, "r1", n); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveRun(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, err := s.Run(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, timeEqual, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("run (-want +got):\n%s", diff)
		}
	}},
	{"unknown run and node", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		if _, err := s.Run(ctx, "nope"); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Run(nope) error = %v, want ErrNotFound", err)
		}
		r := sampleRun("r1", time.Now())
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveNodes(ctx, "r1", &pipeline.Node{ID: "ghost", Status: pipeline.Failed}); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("SaveNodes(ghost) error = %v, want ErrNotFound", err)
		}
		// The failed transaction changed nothing.
		got, _ := s.Run(ctx, "r1")
		if got.Nodes[0].Status != pipeline.Pending {
			t.Errorf("node status = %s after a failed save", got.Nodes[0].Status)
		}
		if err := s.CreateRun(ctx, r); err == nil {
			t.Error("a second CreateRun with the same id succeeded")
		}
	}},
	{"prefix lookup", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		for _, id := range []string{"20261126-090000-aaaaaa", "20261126-090000-bbbbbb", "20261127-100000-cccccc"} {
			if err := s.CreateRun(ctx, sampleRun(id, time.Now())); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := s.Run(ctx, "20261127"); err != nil || r.ID != "20261127-100000-cccccc" {
			t.Errorf("Run(unique prefix) = %v, %v", r, err)
		}
		if _, err := s.Run(ctx, "20261126"); err == nil || !strings.Contains(err.Error(), "matches several runs") {
			t.Errorf("Run(ambiguous prefix) error = %v", err)
		}
		if _, err := s.Run(ctx, "%"); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Run(%%) error = %v, want ErrNotFound", err)
		}
	}},
	{"list newest first", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		base := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
		for i, id := range []string{"a", "b", "c"} {
			if err := s.CreateRun(ctx, sampleRun(id, base.Add(time.Duration(i)*time.Minute))); err != nil {
				t.Fatal(err)
			}
		}
		runs, err := s.Runs(ctx, pipeline.RunFilter{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range runs {
			ids = append(ids, r.ID)
		}
		if diff := cmp.Diff([]string{"c", "b"}, ids); diff != "" {
			t.Errorf("runs (-want +got):\n%s", diff)
		}
	}},
	{"logs in order, by node", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		if err := s.CreateRun(ctx, sampleRun("r1", time.Now())); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, l := range []pipeline.LogLine{{Node: "build[api]", At: now, Text: "one"}, {Node: "deploy", At: now, Text: "two"}, {Node: "build[api]", At: now, Text: "three"}} {
			if err := s.AppendLog(ctx, "r1", []pipeline.LogLine{l}); err != nil {
				t.Fatal(err)
			}
		}
		all, _ := s.Logs(ctx, "r1", "")
		one, _ := s.Logs(ctx, "r1", "build[api]")
		texts := func(ls []pipeline.LogLine) (out []string) {
			for _, l := range ls {
				out = append(out, l.Text)
			}
			return out
		}
		if diff := cmp.Diff([]string{"one", "two", "three"}, texts(all)); diff != "" {
			t.Errorf("all logs (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"one", "three"}, texts(one)); diff != "" {
			t.Errorf("node logs (-want +got):\n%s", diff)
		}
	}},
	{"releases are written once", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		rel := &pipeline.Release{Version: "1.2.0", Pipeline: "p", RunID: "r1", Commits: map[string]string{"api": "c1"}, Images: map[string]string{"api": "reg/api@sha256:aa"}, CreatedAt: time.Now().UTC()}
		if err := s.RecordRelease(ctx, rel); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordRelease(ctx, rel); err != nil {
			t.Errorf("recording the same release again: %v", err)
		}
		changed := *rel
		changed.Images = map[string]string{"api": "reg/api@sha256:bb"}
		if err := s.RecordRelease(ctx, &changed); !errors.Is(err, pipeline.ErrReleaseChanged) {
			t.Errorf("recording other digests: error = %v, want ErrReleaseChanged", err)
		}
		got, err := s.Release(ctx, "1.2.0")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(rel, got, timeEqual); diff != "" {
			t.Errorf("release (-want +got):\n%s", diff)
		}
		if _, err := s.Release(ctx, "9.9.9"); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Release(9.9.9) error = %v, want ErrNotFound", err)
		}
	}},
	{"deployment history newest first", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		for _, d := range []struct{ env, version string }{{"dev", "1.0.0"}, {"staging", "1.0.0"}, {"dev", "1.1.0"}} {
			if err := s.RecordDeployment(ctx, &pipeline.Deployment{Environment: d.env, Version: d.version, RunID: "r", Kind: "run", Images: map[string]string{"api": "x"}, At: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		dev, err := s.Deployments(ctx, "dev", 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range dev {
			got = append(got, d.Environment+" "+d.Version)
		}
		if diff := cmp.Diff([]string{"dev 1.1.0", "dev 1.0.0"}, got); diff != "" {
			t.Errorf("dev history (-want +got):\n%s", diff)
		}
		all, _ := s.Deployments(ctx, "", 1)
		if len(all) != 1 || all[0].Version != "1.1.0" {
			t.Errorf("newest deployment = %+v", all)
		}
	}},
	{"leases", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		a, err := s.AcquireLease(ctx, "env/staging", "run-a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.AcquireLease(ctx, "env/staging", "run-b", time.Minute)
		var held *pipeline.HeldError
		if !errors.As(err, &held) || held.Holder != "run-a" {
			t.Fatalf("second acquire: error = %v, want HeldError naming run-a", err)
		}
		if _, err := s.AcquireLease(ctx, "env/prod", "run-b", time.Minute); err != nil {
			t.Errorf("another environment is free: %v", err)
		}
		if err := s.RenewLease(ctx, a, time.Minute); err != nil {
			t.Errorf("renew: %v", err)
		}
		if err := s.ReleaseLease(ctx, a); err != nil {
			t.Fatal(err)
		}
		b, err := s.AcquireLease(ctx, "env/staging", "run-b", 50*time.Millisecond)
		if err != nil {
			t.Fatalf("acquire after release: %v", err)
		}
		if b.Fence <= a.Fence {
			t.Errorf("fence %d after %d: want it to grow", b.Fence, a.Fence)
		}
		// The old holder's renewal is refused: its fence moved on.
		if err := s.RenewLease(ctx, a, time.Minute); !errors.Is(err, pipeline.ErrLeaseLost) {
			t.Errorf("stale renew: error = %v, want ErrLeaseLost", err)
		}
		// An expired lease is free for the next holder.
		time.Sleep(80 * time.Millisecond)
		c, err := s.AcquireLease(ctx, "env/staging", "run-c", time.Minute)
		if err != nil {
			t.Fatalf("acquire of an expired lease: %v", err)
		}
		if err := s.RenewLease(ctx, b, time.Minute); !errors.Is(err, pipeline.ErrLeaseLost) {
			t.Errorf("renew after expiry and takeover: error = %v, want ErrLeaseLost", err)
		}
		// Releasing with a stale fence does not free someone else's lease.
		_ = s.ReleaseLease(ctx, b)
		if _, err := s.AcquireLease(ctx, "env/staging", "run-d", time.Minute); !errors.As(err, &held) || held.Holder != "run-c" {
			t.Errorf("after a stale release: error = %v, want HeldError naming run-c (fence %d)", err, c.Fence)
		}
	}},
	{"concurrent writers", func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		r := sampleRun("r1", time.Now())
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := &pipeline.Node{ID: r.Nodes[i%2].ID, Status: pipeline.Running, Attempts: i, Outputs: stages.Outputs{}}
				if err := s.SaveNodes(ctx, "r1", n); err != nil {
					t.Error(err)
				}
				if err := s.AppendLog(ctx, "r1", []pipeline.LogLine{{Node: n.ID, At: time.Now(), Text: "x"}}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		logs, _ := s.Logs(ctx, "r1", "")
		if len(logs) != 20 {
			t.Errorf("%d log lines, want 20", len(logs))
		}
	}},
	// ownership_test.go
	{"fenced view writes while its claim is held", fencedWhileHeld(false)},
	{"fenced view writes after its claim expired unclaimed", fencedWhileHeld(true)},
	{"fenced view writes nothing after a takeover", fencedAfterTakeover},
	{"fenced view writes nothing after a release", fencedAfterRelease},
	{"fenced takeover race", fencedTakeoverRace},
	{"versions allocated concurrently are distinct", versionsConcurrent},
	{"versions per pipeline", versionsPerPipeline},
	{"versions pick error", versionsPickError},
	{"versions freed only before the run is recorded", versionsFree},
	{"approve touches only waiting nodes' approval", approveWaitingOnly},
	{"cancel is requested once", cancelOnce},
}

func TestSQLiteReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(context.Background(), sampleRun("r1", time.Now())); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Run(context.Background(), "r1"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestSQLiteRefusesCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 400)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := store.OpenSQLite(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("open of a corrupt file: error = %v, want one naming the file", err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "not a database") {
		t.Error("the corrupt file was overwritten")
	}
}
