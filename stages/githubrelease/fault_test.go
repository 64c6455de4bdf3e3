package githubrelease

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/stages"
)

// hit is one request the fake answered: when it arrived, when its answer
// was written, and the answer's status and Retry-After.
type hit struct {
	start, end   time.Time
	method, path string
	status       int
	retryAfter   string
}

// timed serves fake and records every request, so a test can measure the
// waits between attempts from the server's side.
type timed struct {
	fake *fakegithub.Server
	mu   sync.Mutex
	hits []hit
}

func serveTimed(t *testing.T, env *stages.Env, fake *fakegithub.Server) *timed {
	tm := &timed{fake: fake}
	srv := httptest.NewServer(tm)
	t.Cleanup(srv.Close)
	env.Spec.GitHub.APIURL = srv.URL + "/"
	return tm
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (tm *timed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := hit{start: time.Now(), method: r.Method, path: r.URL.Path}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	tm.fake.ServeHTTP(sw, r)
	// The answer is flushed after this point: the client gets it later.
	h.end, h.status, h.retryAfter = time.Now(), sw.status, w.Header().Get("Retry-After")
	tm.mu.Lock()
	tm.hits = append(tm.hits, h)
	tm.mu.Unlock()
}

// of returns the hits whose path contains part, in order.
func (tm *timed) of(part string) []hit {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	var out []hit
	for _, h := range tm.hits {
		if strings.Contains(h.path, part) {
			out = append(out, h)
		}
	}
	return out
}

// waits are, for each failed answer in hits, the time from that answer to
// the next request: at least what the client slept.
func waits(hits []hit) (statuses []int, gaps []time.Duration) {
	for i, h := range hits {
		if h.status >= 400 && h.status != http.StatusNotFound && i+1 < len(hits) {
			statuses = append(statuses, h.status)
			gaps = append(gaps, hits[i+1].start.Sub(h.end))
		}
	}
	return statuses, gaps
}

func logTo(env *stages.Env) *bytes.Buffer {
	var buf bytes.Buffer
	env.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &buf
}

// GitHub answers a create with 502, then with 403 and Retry-After: 2. The
// stage, with its default retries (5 attempts from 1s), waits at least the
// backoff and then at least the two seconds, and creates the release once.
func TestRunServerErrorThenRateLimit(t *testing.T) {
	env, fake := setup(t)
	tm := serveTimed(t, env, fake)
	logs := logTo(env)
	fake.Inject(fakegithub.Fault{Kind: fakegithub.ServerError, Method: "POST", Path: "/web/"})
	fake.Inject(fakegithub.Fault{Kind: fakegithub.RateLimit, Method: "POST", Path: "/web/", RetryAfter: 2})

	start := time.Now()
	out, err := Kind.New().Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if out["web"] != "created" || out["api"] != "created" {
		t.Errorf("outputs = %v", out)
	}
	var posts []int
	for _, h := range tm.of("/web/") {
		if h.method == http.MethodPost {
			posts = append(posts, h.status)
		}
	}
	if len(posts) != 3 || posts[0] != http.StatusBadGateway || posts[1] != http.StatusForbidden || posts[2] != http.StatusCreated {
		t.Errorf("web creates answered %v, want [502 403 201]", posts)
	}
	statuses, gaps := waits(tm.of("/web/"))
	t.Logf("web: %d creates %v; waits after %v: %v; stage took %v", len(posts), posts, statuses, gaps, took)
	if len(gaps) != 2 {
		t.Fatalf("waits after %v, want after 502 and 403", statuses)
	}
	if gaps[0] < time.Second {
		t.Errorf("waited %v after the 502, less than the 1s backoff", gaps[0])
	}
	if gaps[1] < 2*time.Second {
		t.Errorf("waited %v after Retry-After: 2", gaps[1])
	}
	for _, repo := range []string{"api", "web"} {
		if rels := fake.Releases("sweepboard", repo); len(rels) != 1 || rels[0].TagName != "v0.1.0" || rels[0].Draft {
			t.Errorf("%s releases = %+v, want one published v0.1.0", repo, rels)
		}
	}
	if fake.Mutations() != 4 {
		t.Errorf("mutations = %d, want 4 (api once, web three times)", fake.Mutations())
	}
	if n := strings.Count(logs.String(), "github release: retry"); n != 2 {
		t.Errorf("%d retries logged, want 2:\n%s", n, logs)
	}
}

// The faults outlast the attempts: one 502, then 403 with Retry-After: 1
// four times, both quoting the Authorization header back. The stage fails
// after its five attempts naming the repo and the tag, the token in no
// error or log (the echo arrives scrubbed), and the error is left for the
// executor to retry. Run again later, it creates web's release once and
// adopts api's.
func TestRunFaultsOutlastRetries(t *testing.T) {
	env, fake := setup(t)
	tm := serveTimed(t, env, fake)
	logs := logTo(env)
	fake.Inject(fakegithub.Fault{Kind: fakegithub.ServerError, Path: "/web/", EchoAuth: true})
	fake.Inject(fakegithub.Fault{Kind: fakegithub.RateLimit, Path: "/web/", RetryAfter: 1, Count: 4, EchoAuth: true})

	out, err := Kind.New().Run(context.Background(), env)
	if err == nil {
		t.Fatal("the stage succeeded through lasting faults")
	}
	t.Logf("faults outlast the retries: %v", err)
	for _, want := range []string{"publish release v0.1.0 of sweepboard/web: ", "(gave up after 5 attempts)", "403", "secondary rate limit", "Authorization: Bearer ***"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if stages.IsPermanent(err) {
		t.Errorf("a rate limit is marked permanent: %v", err)
	}
	stageLog := env.Log.(*bytes.Buffer).String()
	for where, text := range map[string]string{"error": err.Error(), "stage log": stageLog, "logger": logs.String()} {
		if strings.Contains(text, token) {
			t.Errorf("the token is in the %s:\n%s", where, text)
		}
	}
	if out["web"] != "failed" || out["api"] != "created" {
		t.Errorf("outputs = %v", out)
	}
	web := tm.of("/web/")
	statuses, gaps := waits(web)
	t.Logf("web: %d attempts; waits after %v: %v", len(web), statuses, gaps)
	if len(web) != 5 {
		t.Errorf("web requests = %d, want 5 (one per attempt, each failing at its first request)", len(web))
	}
	for i, g := range gaps {
		if g < time.Second {
			t.Errorf("wait %d after %d: %v, less than 1s", i+1, statuses[i], g)
		}
	}
	if rels := fake.Releases("sweepboard", "web"); len(rels) != 0 {
		t.Errorf("web releases = %+v", rels)
	}

	mutations := fake.Mutations()
	out, err = Kind.New().Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if out["web"] != "created" || out["api"] != "adopted" {
		t.Errorf("re-run outputs = %v", out)
	}
	for _, repo := range []string{"api", "web"} {
		if rels := fake.Releases("sweepboard", repo); len(rels) != 1 || rels[0].TagName != "v0.1.0" || rels[0].Draft {
			t.Errorf("%s releases = %+v, want one published v0.1.0", repo, rels)
		}
	}
	if n := fake.Mutations() - mutations; n != 1 {
		t.Errorf("re-run made %d mutating requests, want 1", n)
	}
}
