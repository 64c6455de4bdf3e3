package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sweepboard/release/fixtures/parts"
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
		"schedule/weekly-major/2026-10-19T06:00:00Z": time.Date(2026, 10, 19, 6, 0, 0, 0, time.UTC), // 08:00 CEST
		"schedule/weekly-major/2026-10-26T07:00:00Z": time.Date(2026, 10, 26, 7, 0, 0, 0, time.UTC), // 08:00 CET
		"schedule/weekly-major/2026-11-02T07:00:00Z": time.Date(2026, 11, 2, 7, 0, 0, 0, time.UTC),
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
		skip := r.SkipReason
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
				count[r.Schedule+" "+r.Params["fire"]]++
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
		dsn = parts.PostgresDSN
	}
	ctx := context.Background()
	// Opening the store registers the driver and proves the cluster is up.
	probe, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		parts.Missing(t, "PostgreSQL", err)
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

const apiPipeline = `
name: shop
environments:
  dev: {}
  staging: {from: dev}
  prod: {from: staging, approval: required}
stages:
  build: {uses: exec, with: {command: [sh, -c, 'echo compiled shop']}}
  deploy-dev: {uses: exec, environment: dev, needs: [build], with: {command: ['true']}}
  deploy-staging: {uses: exec, environment: staging, needs: [deploy-dev], with: {command: ['true']}}
  deploy-prod: {uses: exec, environment: prod, needs: [deploy-staging], with: {command: ['true']}}
freeze:
  holidays: {environments: [prod], from: "2000-01-01 00:00", to: "2999-01-01 00:00"}
schedules:
  weekly-major: {cron: "0 8 * * MON", bump: major, time_zone: Europe/Berlin}
`

const apiDigest = "127.0.0.1:5000/shop/api@sha256:4f0d3bb4a4ab3f7ee0c3c7b4ac3c8f1e5bbf0e9d8f2ad1f0c0b7e0e3a4b5c6d7"

// seedAPIStore records what the API tests read: a run waiting at the prod
// gate (through release run's own code), and release 1.0.0 live in dev
// and staging.
func seedAPIStore(t *testing.T, s *server) string {
	t.Helper()
	ctx := context.Background()
	ids := newFirstLineWriter()
	sub := s.subFactory(ids, io.Discard, "seeder")
	err := runRun(ctx, &RunOptions{f: sub, Parallel: 2, Force: true, Reason: "seeding the test"})
	if exitCode(err) != exitWaiting {
		t.Fatalf("seed run: %v, want it waiting", err)
	}
	rel := &pipeline.Release{Version: "1.0.0", Pipeline: "shop", RunID: "seed", Commits: map[string]string{}, Images: map[string]string{}, CreatedAt: time.Now()}
	if err := s.st.RecordRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"dev", "staging"} {
		d := &pipeline.Deployment{Environment: env, Version: "1.0.0", RunID: "seed", Kind: "run", Images: map[string]string{"api": apiDigest}, At: time.Now()}
		if err := s.st.RecordDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	return ids.got()
}

type apiClient struct {
	t     *testing.T
	url   string
	token string
}

func (c apiClient) do(method, path, token, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (c apiClient) getJSON(path string, v any) {
	c.t.Helper()
	code, body := c.do("GET", path, "", "")
	if code != http.StatusOK {
		c.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		c.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

// storeState is what a refused request must leave unchanged.
func storeState(t *testing.T, st pipeline.Store) string {
	t.Helper()
	ctx := context.Background()
	runs, err := st.Runs(ctx, pipeline.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range runs {
		full, err := st.Run(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		full.FinishedAt = nil
		j, _ := json.Marshal(full)
		b.Write(j)
		b.WriteByte('\n')
	}
	deps, err := st.Deployments(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(deps)
	b.Write(j)
	return b.String()
}

// waitRun polls the store until the run's status is want.
func waitRun(t *testing.T, st pipeline.Store, id string, want pipeline.Status) *pipeline.Run {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := st.Run(context.Background(), id)
		if err == nil && r.Status == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: %v, status %v; want %s", id, err, r, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeAPI(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	const token = "s3cret-t0ken"
	s, log := newTestServer(t, dir, "", map[string]string{"RELEASE_SERVE_TOKEN": token})
	waiting := seedAPIStore(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := httptest.NewServer(s.handler(ctx))
	defer hs.Close()
	c := apiClient{t: t, url: hs.URL, token: token}

	t.Run("list runs", func(t *testing.T) {
		var runs []serveRunSummary
		c.getJSON("/api/runs", &runs)
		if len(runs) != 1 || runs[0].ID != waiting || runs[0].Status != "waiting" || runs[0].Version != "0.1.0" {
			t.Errorf("runs %+v, want the waiting run %s", runs, waiting)
		}
	})

	t.Run("show run", func(t *testing.T) {
		var v serveRunView
		c.getJSON("/api/runs/"+waiting[:15], &v)
		got := map[string]string{}
		for _, n := range v.Stages {
			got[n.ID] = n.Status
		}
		want := map[string]string{"build": "succeeded", "deploy-dev": "succeeded", "deploy-staging": "succeeded", "approve-prod": "waiting", "deploy-prod": "pending"}
		if diff := cmp.Diff(want, got); diff != "" || v.ID != waiting || v.Override == nil {
			t.Errorf("run %s, override %+v, stages (-want +got):\n%s", v.ID, v.Override, diff)
		}
		// The shape is the one of runs show -o json.
		var raw map[string]any
		c.getJSON("/api/runs/"+waiting, &raw)
		for _, k := range []string{"id", "kind", "status", "version", "startedAt", "finishedAt", "commits", "images", "stages"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("run JSON has no %q: %v", k, raw)
			}
		}
		if code, body := c.do("GET", "/api/runs/20991231", "", ""); code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
			t.Errorf("unknown run: %d %s, want 404 with an error", code, body)
		}
	})

	t.Run("logs", func(t *testing.T) {
		var page logPageView
		c.getJSON("/api/runs/"+waiting+"/logs?stage=build", &page)
		if !slices.ContainsFunc(page.Lines, func(l pipeline.LogLine) bool { return l.Text == "compiled shop" }) || page.More {
			t.Errorf("logs of build: %+v", page)
		}
	})

	t.Run("environments", func(t *testing.T) {
		var v serveStatusView
		c.getJSON("/api/environments", &v)
		type env struct {
			Name, Version string
			Services      []string
			Frozen        []string
		}
		var got []env
		for _, e := range v.Environments {
			ge := env{Name: e.Name, Version: e.Version}
			for _, svc := range e.Services {
				ge.Services = append(ge.Services, svc.Name+" "+svc.Digest+" "+svc.Health)
			}
			for _, w := range e.Windows {
				if w.Active {
					ge.Frozen = append(ge.Frozen, w.Name)
				}
			}
			got = append(got, ge)
		}
		want := []env{
			{Name: "dev", Version: "1.0.0", Services: []string{"api " + apiDigest + " not inspected"}},
			{Name: "staging", Version: "1.0.0", Services: []string{"api " + apiDigest + " not inspected"}},
			{Name: "prod", Frozen: []string{"holidays"}},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("environments (-want +got):\n%s", diff)
		}
	})

	t.Run("schedules", func(t *testing.T) {
		var v []scheduleView
		c.getJSON("/api/schedules", &v)
		if len(v) != 1 || v[0].Name != "weekly-major" || v[0].Next.IsZero() {
			t.Errorf("schedules %+v", v)
		}
	})

	// Every refused request: status, a word of the error, and nothing in
	// the store changed.
	refused := []struct {
		name, path, token, body string
		code                    int
		says                    string
	}{
		{"approve without token", "/api/runs/" + waiting + "/approve", "", `{"stage": "approve-prod"}`, 401, "bearer token"},
		{"approve with a wrong token", "/api/runs/" + waiting + "/approve", "nope", `{"stage": "approve-prod"}`, 401, "bearer token"},
		{"approve, body not JSON", "/api/runs/" + waiting + "/approve", token, `stage=approve-prod`, 400, "invalid character"},
		{"approve, stage not a string", "/api/runs/" + waiting + "/approve", token, `{"stage": 5}`, 400, "cannot unmarshal"},
		{"approve, unknown field", "/api/runs/" + waiting + "/approve", token, `{"stage": "approve-prod", "yes": true}`, 400, `unknown field "yes"`},
		{"approve, trailing data", "/api/runs/" + waiting + "/approve", token, `{"stage": "approve-prod"} {}`, 400, "trailing data"},
		{"approve, stage not waiting", "/api/runs/" + waiting + "/approve", token, `{"stage": "deploy-prod"}`, 400, `"deploy-prod" is not waiting`},
		{"approve, unknown run", "/api/runs/20991231/approve", token, `{}`, 404, "not found"},
		{"promote without token", "/api/promotions", "", `{"environment": "staging"}`, 401, "bearer token"},
		{"promote, empty body", "/api/promotions", token, ``, 400, "EOF"},
		{"promote, no environment", "/api/promotions", token, `{}`, 400, "environment: required"},
		{"promote, unknown environment", "/api/promotions", token, `{"environment": "qa"}`, 400, `unknown environment "qa"`},
		{"promote, bad version", "/api/promotions", token, `{"environment": "staging", "version": "one"}`, 400, "--version"},
		{"promote, force not a bool", "/api/promotions", token, `{"environment": "prod", "force": "yes"}`, 400, "cannot unmarshal"},
		{"promote into a frozen environment", "/api/promotions", token, `{"environment": "prod"}`, 409, "frozen by window holidays"},
		{"promote, force without a reason", "/api/promotions", token, `{"environment": "prod", "force": true}`, 400, "--force needs --reason"},
		{"promote, version never in the from environment", "/api/promotions", token, `{"environment": "staging", "version": "9.9.9"}`, 409, "never reached dev"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := storeState(t, s.st)
			code, body := c.do("POST", tt.path, tt.token, tt.body)
			var e struct{ Error string }
			json.Unmarshal([]byte(body), &e)
			if code != tt.code || !strings.Contains(e.Error, tt.says) {
				t.Errorf("POST %s %s: %d %s; want %d saying %q", tt.path, tt.body, code, body, tt.code, tt.says)
			}
			if diff := cmp.Diff(before, storeState(t, s.st)); diff != "" {
				t.Errorf("the store changed (-before +after):\n%s", diff)
			}
		})
	}
	if strings.Contains(log.String(), token) {
		t.Error("the token reached the server log")
	}

	t.Run("wrong method", func(t *testing.T) {
		if code, _ := c.do("GET", "/api/promotions", "", ""); code != http.StatusMethodNotAllowed {
			t.Errorf("GET /api/promotions: %d, want 405", code)
		}
	})

	t.Run("promote", func(t *testing.T) {
		code, body := c.do("POST", "/api/promotions", token, `{"environment": "staging", "by": "bob"}`)
		if code != http.StatusAccepted {
			t.Fatalf("promote staging: %d %s", code, body)
		}
		var resp struct{ RunID, Environment string }
		if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.RunID == "" || resp.Environment != "staging" {
			t.Fatalf("promote answer %s: %v", body, err)
		}
		waitRun(t, s.st, resp.RunID, pipeline.Succeeded)
		s.runs.Wait()
		r, err := s.st.Run(context.Background(), resp.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != "promote" || r.Environment != "staging" || r.Version != "1.0.0" {
			t.Errorf("promotion run %+v", r)
		}
		claimFree(t, s.st, r.ID)
	})

	t.Run("promote through a freeze with a reason", func(t *testing.T) {
		code, body := c.do("POST", "/api/promotions", token, `{"environment": "prod", "force": true, "reason": "payment outage hotfix", "by": "carol"}`)
		if code != http.StatusAccepted {
			t.Fatalf("forced promote: %d %s", code, body)
		}
		var resp struct{ RunID string }
		json.Unmarshal([]byte(body), &resp)
		waitRun(t, s.st, resp.RunID, pipeline.Waiting) // at the prod gate
		var v serveRunView
		c.getJSON("/api/runs/"+resp.RunID, &v)
		want := &overrideView{Windows: "holidays", By: "carol", Reason: "payment outage hotfix"}
		if v.Override == nil || v.Override.At.IsZero() {
			t.Errorf("override %+v: want it recorded with its time", v.Override)
		}
		if diff := cmp.Diff(want, v.Override, cmpopts.IgnoreFields(overrideView{}, "At")); diff != "" {
			t.Errorf("override (-want +got):\n%s", diff)
		}
	})

	t.Run("approve", func(t *testing.T) {
		code, body := c.do("POST", "/api/runs/"+waiting+"/approve", token, `{"stage": "approve-prod", "by": "alice"}`)
		if code != http.StatusOK {
			t.Fatalf("approve: %d %s", code, body)
		}
		var resp struct {
			RunID    string
			Approved []string
			By       string
			Resumed  bool
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		want := struct {
			RunID    string
			Approved []string
			By       string
			Resumed  bool
		}{waiting, []string{"approve-prod"}, "alice", true}
		if diff := cmp.Diff(want, resp); diff != "" {
			t.Errorf("approve answer (-want +got):\n%s", diff)
		}
		waitRun(t, s.st, waiting, pipeline.Succeeded)
		s.runs.Wait()
		r, err := s.st.Run(context.Background(), waiting)
		if err != nil {
			t.Fatal(err)
		}
		if n := r.Node("approve-prod"); n.Approval == nil || n.Approval.By != "alice" {
			t.Errorf("approval %+v", n.Approval)
		}
		claimFree(t, s.st, r.ID)
	})
}

// claimFree fails the test when run id is still claimed by an owner: a
// server gives its claim up when it stops executing a run.
func claimFree(t *testing.T, st pipeline.Store, id string) {
	t.Helper()
	l, err := st.AcquireLease(context.Background(), pipeline.ClaimPrefix+id, "probe", time.Second)
	if err != nil {
		t.Errorf("run %s is still claimed after it finished: %v", id, err)
		return
	}
	_ = st.ReleaseLease(context.Background(), l)
}

// TestServeAPIWithoutToken: a server started without RELEASE_SERVE_TOKEN
// answers reads and refuses every change.
func TestServeAPIWithoutToken(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	hs := httptest.NewServer(s.handler(context.Background()))
	defer hs.Close()
	c := apiClient{t: t, url: hs.URL}
	before := storeState(t, s.st)
	for _, tok := range []string{"", "anything"} {
		code, body := c.do("POST", "/api/promotions", tok, `{"environment": "staging"}`)
		if code != http.StatusUnauthorized || !strings.Contains(body, "no RELEASE_SERVE_TOKEN") {
			t.Errorf("promote with token %q: %d %s", tok, code, body)
		}
		code, body = c.do("POST", "/api/runs/"+waiting+"/approve", tok, `{}`)
		if code != http.StatusUnauthorized {
			t.Errorf("approve with token %q: %d %s", tok, code, body)
		}
	}
	if diff := cmp.Diff(before, storeState(t, s.st)); diff != "" {
		t.Errorf("the store changed (-before +after):\n%s", diff)
	}
	var runs []serveRunSummary
	c.getJSON("/api/runs", &runs)
	if len(runs) != 1 {
		t.Errorf("runs %+v", runs)
	}
}

// TestLayoutDAG: a node sits one column right of the deepest node it
// needs, rows fill in graph order.
//
//	build[api] ── push[api] ──┐
//	build[web] ── push[web] ──┴── deploy ── gate
func TestLayoutDAG(t *testing.T) {
	run := &pipeline.Run{Nodes: []*pipeline.Node{
		{ID: "build[api]", Status: pipeline.Succeeded},
		{ID: "build[web]", Status: pipeline.Failed},
		{ID: "push[api]", Needs: []string{"build[api]"}, Status: pipeline.Succeeded},
		{ID: "push[web]", Needs: []string{"build[web]"}, Status: pipeline.Skipped},
		{ID: "deploy", Needs: []string{"push[api]", "push[web]"}, Status: pipeline.Skipped},
		{ID: "gate-with-a-rather-long-name", Needs: []string{"deploy"}, Status: pipeline.Pending},
	}}
	l := layoutDAG(run, time.Now())
	type cell struct {
		ID, Label, Status string
		Col, Row          int
	}
	var got []cell
	for _, n := range l.Nodes {
		got = append(got, cell{n.ID, n.Label, n.Status, (n.X - dagPad) / dagColW, (n.Y - dagPad) / dagRowH})
	}
	want := []cell{
		{"build[api]", "build[api]", "succeeded", 0, 0},
		{"build[web]", "build[web]", "failed", 0, 1},
		{"push[api]", "push[api]", "succeeded", 1, 0},
		{"push[web]", "push[web]", "skipped", 1, 1},
		{"deploy", "deploy", "skipped", 2, 0},
		{"gate-with-a-rather-long-name", "gate-with-a-rather-lo…", "pending", 3, 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layout (-want +got):\n%s", diff)
	}
	var edges []string
	for _, e := range l.Edges {
		edges = append(edges, e.From+"→"+e.To+" "+e.Class)
	}
	wantEdges := []string{"build[api]→push[api] done", "build[web]→push[web] ", "push[api]→deploy done", "push[web]→deploy ", "deploy→gate-with-a-rather-long-name "}
	if diff := cmp.Diff(wantEdges, edges); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
	if want := 2*dagPad + 3*dagColW + dagBoxW; l.Width != want {
		t.Errorf("width %d, want %d", l.Width, want)
	}
	if want := 2*dagPad + dagRowH + dagBoxH; l.Height != want {
		t.Errorf("height %d, want %d", l.Height, want)
	}
}

// TestScheduleLoop runs the scheduler's own loop with a clock set a second
// before a fire: the fire starts one run, and the loop stops with its
// context.
func TestScheduleLoop(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), everyTenPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	fireAt := time.Date(2026, 11, 30, 9, 10, 0, 0, time.UTC)
	offset := time.Until(fireAt.Add(-time.Second))
	s.now = func() time.Time { return time.Now().Add(offset) }
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.schedule(ctx, context.Background())
	}()
	deadline := time.Now().Add(20 * time.Second)
	var runs []*pipeline.Run
	for len(runs) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		var err error
		if runs, err = s.st.Runs(context.Background(), pipeline.RunFilter{}); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the scheduler did not stop with its context")
	}
	s.runs.Wait()
	if len(runs) != 1 || runs[0].Schedule != "every-ten" || runs[0].Params["fire"] != "2026-11-30T09:10:00Z" {
		t.Fatalf("runs after the fire: %+v", runs)
	}
}

// TestScheduleFrozen: a fire while a freeze window covers an environment
// of the pipeline records a skipped run that names the window.
func TestScheduleFrozen(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	clock := &fakeClock{}
	s.now = clock.now
	from := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	started := walk(s, clock, from, from.Add(12*time.Hour), time.Minute, nil)
	if len(started) != 1 {
		t.Fatalf("fires %v, want the Monday 08:00 one", started)
	}
	runs, err := s.st.Runs(context.Background(), pipeline.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Status != pipeline.Skipped || !strings.Contains(runs[0].SkipReason, "prod is frozen by window holidays") {
		t.Fatalf("runs %+v, want one skipped by the freeze", runs)
	}
}
