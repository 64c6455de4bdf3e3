package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages/builtin"
)

// syncBuffer collects a server's log; it is printed when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fakeClock is the scheduler's injected clock.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func (c *fakeClock) set(t time.Time) { c.t.Store(&t) }
func (c *fakeClock) now() time.Time  { return *c.t.Load() }

// newTestServer makes a server for the pipeline file in dir, on the state
// store dsn ("" for the file's default), with its own store connection as
// a second process would have.
func newTestServer(t *testing.T, dir, dsn string, env map[string]string) (*server, *syncBuffer) {
	t.Helper()
	f := &Factory{
		IO:       &IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard},
		Registry: builtin.Registry,
		Getenv:   func(k string) string { return env[k] },
		File:     filepath.Join(dir, "pipeline.yaml"),
		State:    dsn,
		Output:   "text",
	}
	t.Cleanup(f.Close)
	log := &syncBuffer{}
	s, err := newServer(context.Background(), f, log)
	if err != nil {
		t.Fatal(err)
	}
	s.parallel = 2
	t.Cleanup(func() {
		s.runs.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", log)
		}
	})
	return s, log
}

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// walk moves the clock from from to to in steps, ticking the server at
// every step and letting the fires it starts finish before the next one.
// It returns each fire with the clock reading at the tick that started
// it; at is called at every step first.
func walk(s *server, clock *fakeClock, from, to time.Time, step time.Duration, at func(time.Time)) map[string]time.Time {
	started := map[string]time.Time{}
	prev := from
	clock.set(from)
	for now := from.Add(step); !now.After(to); now = now.Add(step) {
		if at != nil {
			at(now)
		}
		clock.set(now)
		for _, fr := range s.tick(context.Background(), prev, now) {
			started[fr.key()] = now
		}
		s.runs.Wait()
		prev = now
	}
	return started
}

const weeklyPipeline = `
name: weekly
repos:
  api: {url: remotes/api.git}
stages:
  build: {uses: exec, with: {command: ['true']}}
  tag: {uses: git-tag, needs: [build]}
schedules:
  weekly-major: {cron: "0 8 * * MON", bump: major, time_zone: Europe/Berlin}
`

// TestScheduleWeeklyMajor walks an injected clock minute by minute over
// three Mondays around the end of summer time in Berlin: the weekly major
// fires at 08:00 Berlin time each week (06:00 UTC, then 07:00 UTC); the
// week without a commit records a skipped run with the reason; the week
// after a commit releases the next major.
func TestScheduleWeeklyMajor(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), weeklyPipeline)
	git(t, dir, "init", "-q", "--bare", "-b", "main", "remotes/api.git")
	git(t, dir, "init", "-q", "-b", "main", "work")
	work := filepath.Join(dir, "work")
	git(t, work, "remote", "add", "origin", "../remotes/api.git")
	git(t, work, "commit", "-q", "--allow-empty", "-m", "feat: api serves")
	git(t, work, "push", "-q", "origin", "main")

	s, _ := newTestServer(t, dir, "", nil)
	clock := &fakeClock{}
	s.now = clock.now
	from := time.Date(2026, 10, 13, 0, 0, 0, 0, time.UTC)
	to := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	committed := false
	started := walk(s, clock, from, to, time.Minute, func(now time.Time) {
		// A commit lands on Wednesday of the second week.
		if !committed && now.After(time.Date(2026, 10, 28, 12, 0, 0, 0, time.UTC)) {
			git(t, work, "commit", "-q", "--allow-empty", "-m", "fix: keep serving")
			git(t, work, "push", "-q", "origin", "main")
			committed = true
		}
	})

	wantStarted := map[string]time.Time{
		"schedule/weekly-major/2026-10-19T06:00Z": time.Date(2026, 10, 19, 6, 0, 0, 0, time.UTC), // 08:00 CEST
		"schedule/weekly-major/2026-10-26T07:00Z": time.Date(2026, 10, 26, 7, 0, 0, 0, time.UTC), // 08:00 CET
		"schedule/weekly-major/2026-11-02T07:00Z": time.Date(2026, 11, 2, 7, 0, 0, 0, time.UTC),
	}
	if diff := cmp.Diff(wantStarted, started); diff != "" {
		t.Errorf("fires (-want +got):\n%s", diff)
	}

	ctx := context.Background()
	runs, err := s.st.Runs(ctx, pipeline.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	type rec struct{ Fire, Status, Version, Skip string }
	var got []rec
	for _, r := range runs {
		skip := r.Params["skipReason"]
		if i := strings.Index(skip, " since "); i >= 0 {
			skip = skip[:i]
		}
		got = append(got, rec{r.Params["fire"], string(r.Status), r.Version, skip})
	}
	want := []rec{
		{"2026-11-02T07:00:00Z", "succeeded", "2.0.0", ""},
		{"2026-10-26T07:00:00Z", "skipped", "", "no commit in any repo"},
		{"2026-10-19T06:00:00Z", "succeeded", "1.0.0", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("runs, newest first (-want +got):\n%s", diff)
	}
	if len(runs) == 3 {
		if id := runs[1].ID; !strings.HasPrefix(id, "20261026-070000-") {
			t.Errorf("skipped run id %s: want it named after the fire", id)
		}
		if r, err := s.st.Run(ctx, runs[1].ID); err != nil || len(r.Nodes) != 0 || r.FinishedAt == nil {
			t.Errorf("skipped run: %v, %+v: want no nodes and a finish time", err, r)
		}
	}
	if tags := git(t, dir, "--git-dir", "remotes/api.git", "tag", "--list"); tags != "v1.0.0\nv2.0.0" {
		t.Errorf("tags %q, want v1.0.0 and v2.0.0", tags)
	}
}

const everyTenPipeline = `
name: tens
stages:
  build: {uses: exec, with: {command: ['true']}}
schedules:
  every-ten: {cron: "*/10 * * * *"}
  hourly: {cron: "@hourly", bump: patch}
`

// TestScheduleTwoServers runs two servers, each with its own connection to
// one store, over the same two hours of fires at the same time, their
// clocks stepping differently: every fire starts exactly one run.
func TestScheduleTwoServers(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "pipeline.yaml"), everyTenPipeline)
			dsn := ""
			if backend == "postgres" {
				dsn = postgresSchema(t)
			}
			a, _ := newTestServer(t, dir, dsn, nil)
			b, _ := newTestServer(t, dir, dsn, nil)
			from := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
			to := from.Add(2 * time.Hour)
			var startedA, startedB map[string]time.Time
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				c := &fakeClock{}
				a.now = c.now
				startedA = walk(a, c, from, to, time.Minute, nil)
			}()
			go func() {
				defer wg.Done()
				c := &fakeClock{}
				b.now = c.now
				startedB = walk(b, c, from, to, 20*time.Second, nil)
			}()
			wg.Wait()

			runs, err := a.st.Runs(context.Background(), pipeline.RunFilter{})
			if err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, r := range runs {
				count[r.Params["schedule"]+" "+r.Params["fire"]]++
				if r.Status != pipeline.Succeeded {
					t.Errorf("run %s: %s", r.ID, r.Status)
				}
			}
			want := map[string]int{}
			for m := 10; m <= 120; m += 10 {
				want["every-ten "+from.Add(time.Duration(m)*time.Minute).Format(time.RFC3339)] = 1
			}
			for h := 1; h <= 2; h++ {
				want["hourly "+from.Add(time.Duration(h)*time.Hour).Format(time.RFC3339)] = 1
			}
			if diff := cmp.Diff(want, count); diff != "" {
				t.Errorf("runs per fire (-want +got):\n%s", diff)
			}
			for k := range startedA {
				if _, ok := startedB[k]; ok {
					t.Errorf("fire %s started by both servers", k)
				}
			}
			if n := len(startedA) + len(startedB); n != len(want) {
				t.Errorf("%d fires started (a %d, b %d), want %d", n, len(startedA), len(startedB), len(want))
			}
		})
	}
}

// postgresSchema is a DSN for a fresh schema of the test cluster
// fixtures/up.sh starts (RELEASE_TEST_POSTGRES overrides it).
func postgresSchema(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("RELEASE_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://release:release@127.0.0.1:5432/release_test?sslmode=disable"
	}
	ctx := context.Background()
	// Opening the store registers the driver and proves the cluster is up.
	probe, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL: %v (fixtures/up.sh starts it)", err)
		}
		t.Skipf("no PostgreSQL: %v", err)
	}
	probe.Close()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("serve_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a, err := sql.Open("pgx", dsn); err == nil {
			a.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			a.Close()
		}
	})
	return dsn + "&search_path=" + schema
}
