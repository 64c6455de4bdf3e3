package repos

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/stages"
)

// logTo sends the Set's logger to a buffer that is safe to write from the
// repos' goroutines.
func logTo(set *Set) *syncBuffer {
	var buf syncBuffer
	set.logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &buf
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// posts counts the fake's POST requests to the releases of owner/repo.
func posts(fake *fakegithub.Server, repo string) int {
	n := 0
	for _, r := range fake.Requests() {
		if r == "POST /repos/sweepboard/"+repo+"/releases" {
			n++
		}
	}
	return n
}

// GitHub's rate limits, each as GitHub documents it, on api's create:
// each is retried after the wait GitHub asks for (a reset, a Retry-After,
// or the secondary limit's minute, here shortened), api's release is
// created once, and the wait is logged and reported in the result. The
// limit is the token's, so web and worker, published at the same time
// with the same client, may wait for it too; each still gets one release.
func TestReleasesRateLimits(t *testing.T) {
	tests := []struct {
		name   string
		fault  fakegithub.Fault
		reason string        // in the log
		posts  int           // api's POSTs, the one that created included
		least  time.Duration // the wait at least
		// orPosts, when set, is another count of api's POSTs that is right
		// too: web's and worker's answers, read by the same client at the
		// same time, may come in after the one that spent the limit and
		// make go-github send api's create anyway (GitHub then refuses it,
		// and it is waited out the same way).
		orPosts int
	}{
		{"429 primary", fakegithub.Fault{Kind: fakegithub.PrimaryLimit429, Method: "POST", Path: "/api/", Reset: time.Second}, "primary rate limit (429)", 2, time.Second, 0},
		{"429 secondary without Retry-After", fakegithub.Fault{Kind: fakegithub.SecondaryLimit429, Method: "POST", Path: "/api/"}, "secondary rate limit (429)", 2, 300 * time.Millisecond, 0},
		{"403 primary, X-RateLimit-Remaining 0", fakegithub.Fault{Kind: fakegithub.PrimaryLimit, Method: "POST", Path: "/api/", Reset: time.Second}, "primary rate limit (403)", 2, time.Second, 0},
		{"403 secondary with Retry-After", fakegithub.Fault{Kind: fakegithub.RateLimit, Method: "POST", Path: "/api/", RetryAfter: 1}, "secondary rate limit (403)", 2, time.Second, 0},
		// The answer before the create spends the limit: go-github then
		// refuses the create itself, without a request, until the reset.
		{"primary limit spent, refused by the client", fakegithub.Fault{Kind: fakegithub.Exhaust, Method: "GET", Path: "/api/releases/latest", Reset: time.Second}, "primary rate limit (403)", 1, time.Second, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // mostly waiting
			set, fake, _ := ghSet(t)
			logs := logTo(set)
			fake.Inject(tt.fault)
			start := time.Now()
			rels, err := set.Releases(context.Background(), "1.1.0", nil)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			checkOneReleaseEach(t, fake)
			api := rels[0]
			if n := posts(fake, "api"); api.Outcome != Created || n != tt.posts && (tt.orPosts == 0 || n != tt.orPosts) {
				t.Errorf("api: %s after %d POSTs, want created after %d", api.Outcome, posts(fake, "api"), tt.posts)
			}
			if api.RateLimited < tt.least || api.Waited != api.RateLimited || took < tt.least {
				t.Errorf("api waited %v (%v for the rate limit) in %v, want at least %v", api.Waited, api.RateLimited, took, tt.least)
			}
			// The limit is the token's: web and worker, published at the
			// same time with the same client, may wait for it too.
			log := logs.String()
			line := `msg="github release: retry" repo=api tag=v1.1.0 attempt=1 of=5 reason="` + tt.reason + `"`
			if n := strings.Count(log, `msg="github release: retry" repo=api `); n != 1 || !strings.Contains(log, line) {
				t.Errorf("%d retries of api logged, want 1: %s\n%s", n, line, log)
			}
			if strings.Contains(log, ghToken) {
				t.Errorf("the token is in the log:\n%s", log)
			}
			t.Logf("%s: waited %v for GitHub's rate limit, %d POSTs, %v in all", tt.name, api.RateLimited.Round(time.Millisecond), posts(fake, "api"), took.Round(time.Millisecond))
		})
	}
}

// A reset beyond the policy's MaxWait fails at once, naming the wait,
// rather than holding the stage for an hour; the token is in no error.
func TestReleasesRateLimitTooLong(t *testing.T) {
	set, fake, _ := ghSet(t)
	fake.Inject(fakegithub.Fault{Kind: fakegithub.PrimaryLimit, Method: "POST", Path: "/api/", Reset: time.Hour, EchoAuth: true})
	start := time.Now()
	rels, err := set.Releases(context.Background(), "1.1.0", nil)
	if err == nil {
		t.Fatal("an hour's wait was waited")
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	for _, want := range []string{"publish release v1.1.0 of sweepboard/api", "more than the 2m0s bound", "rate limit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), ghToken) || strings.Contains(rels[0].Error, ghToken) {
		t.Errorf("the token is in the error: %v", err)
	}
}

// The release points at the tagged commit (not the branch head, which
// moved on), and a version older than the repo's latest release is not
// made the latest: the latest pointer stays on the newer one.
func TestReleasesTargetAndLatest(t *testing.T) {
	h := history{
		"api": {"feat: init", "tag v1.0.0", "feat: login", "tag v1.1.0", "feat: after the tag"},
		"web": {"feat: init", "tag v1.1.0"},
	}
	set, _, _ := h.build(t)
	fake := fakegithub.New(ghToken)
	set.spec.GitHub = gitHubOf(t, fake)
	set.getenv = func(string) string { return ghToken }
	fake.AddRelease("sweepboard", "api", fakegithub.Release{TagName: "v2.0.0", Name: "v2.0.0"})

	rels, err := set.Releases(context.Background(), "1.1.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, repo := range []string{"api", "web"} {
		tagged := gitCLI(t, set.spec.Dir, "--git-dir", set.spec.Repos[repo].URL, "rev-parse", "v1.1.0^{commit}")
		var got *fakegithub.Release
		for _, r := range fake.Releases("sweepboard", repo) {
			if r.TagName == "v1.1.0" {
				got = &r
			}
		}
		if got == nil || rels[i].Outcome != Created {
			t.Fatalf("%s: no release v1.1.0 (%+v)", repo, rels[i])
		}
		if got.TargetCommitish != tagged {
			t.Errorf("%s: target_commitish %q, want the tagged commit %s", repo, got.TargetCommitish, tagged)
		}
	}
	if api := fake.Releases("sweepboard", "api")[1]; api.MakeLatest != "false" {
		t.Errorf("api v1.1.0 make_latest = %q, want false below v2.0.0", api.MakeLatest)
	}
	if l, _ := fake.Latest("sweepboard", "api"); l.TagName != "v2.0.0" {
		t.Errorf("api's latest = %q, want v2.0.0", l.TagName)
	}
	if web := fake.Releases("sweepboard", "web")[0]; web.MakeLatest != "true" {
		t.Errorf("web make_latest = %q, want true", web.MakeLatest)
	}
	if l, _ := fake.Latest("sweepboard", "web"); l.TagName != "v1.1.0" {
		t.Errorf("web's latest = %q, want v1.1.0", l.TagName)
	}
}

// A pre-release is never made the latest, and a draft left by a crash is
// published pointed at the tagged commit.
func TestReleasesPrereleaseDraft(t *testing.T) {
	h := history{"api": {"feat: init", "tag v1.0.0", "feat: next", "tag v1.1.0-rc.1"}}
	set, _, _ := h.build(t)
	fake := fakegithub.New(ghToken)
	set.spec.GitHub = gitHubOf(t, fake)
	set.getenv = func(string) string { return ghToken }
	fake.AddRelease("sweepboard", "api", fakegithub.Release{TagName: "v1.0.0"})
	fake.AddRelease("sweepboard", "api", fakegithub.Release{TagName: "v1.1.0-rc.1", Draft: true})
	rels, err := set.Releases(context.Background(), "1.1.0-rc.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := fake.Releases("sweepboard", "api")[1]
	tagged := gitCLI(t, set.spec.Dir, "--git-dir", set.spec.Repos["api"].URL, "rev-parse", "v1.1.0-rc.1^{commit}")
	if rels[0].Outcome != Published || got.Draft || !got.Prerelease || got.MakeLatest != "false" || got.TargetCommitish != tagged {
		t.Errorf("rc release: %s, %+v", rels[0].Outcome, got)
	}
	if l, _ := fake.Latest("sweepboard", "api"); l.TagName != "v1.0.0" {
		t.Errorf("latest = %q, want v1.0.0", l.TagName)
	}
}

// gitHubOf is the github block of a pipeline file pointed at fake.
func gitHubOf(t *testing.T, fake *fakegithub.Server) stages.GitHub {
	return stages.GitHub{Owner: "sweepboard", APIURL: fake.Start(t), TokenEnv: "TEST_GH_TOKEN"}
}

// release doctor's GitHub check: with the token, one ok per repo; with a
// wrong one, each fails naming the repo and not the token; without one it
// still asks GitHub and fails naming the variable, saying whether GitHub
// answers; a GitHub that accepts and never answers fails within the file's
// first-byte bound.
func TestCheckGitHub(t *testing.T) {
	set, fake, env := ghSet(t)
	ctx := context.Background()
	for _, c := range set.CheckGitHub(ctx) {
		if c.Err != nil {
			t.Errorf("%s: %v", c.Name, c.Err)
		}
	}

	env["TEST_GH_TOKEN"] = "ghp_wrong_value_987"
	checks := set.CheckGitHub(ctx)
	if len(checks) != 3 || checks[0].Name != "github releases of sweepboard/api" || checks[0].Err == nil ||
		!strings.Contains(checks[0].Err.Error(), "401 Bad credentials") || strings.Contains(checks[0].Err.Error(), "ghp_wrong_value_987") {
		t.Errorf("wrong token: %+v", checks)
	}

	env["TEST_GH_TOKEN"] = ""
	before := len(fake.Requests())
	checks = set.CheckGitHub(ctx)
	want := "github: token variable TEST_GH_TOKEN is empty; GitHub answers at " + set.spec.GitHub.APIURL + " without it (60 of 60 requests an hour left)"
	if len(checks) != 1 || checks[0].Err == nil || checks[0].Err.Error() != want {
		t.Errorf("no token: %+v\nwant %s", checks, want)
	}
	if got := fake.Requests()[before:]; len(got) != 1 || got[0] != "GET /rate_limit" {
		t.Errorf("no token: requests %v, want one GET /rate_limit", got)
	}

	// A listener that accepts and never answers.
	silent := parts.SilentPeer(t)
	set.spec.GitHub.APIURL = "http://" + silent + "/"
	set.spec.Timeouts = deadline.Deadlines{FirstByte: 300 * time.Millisecond}
	for _, tok := range []string{"", ghToken} {
		env["TEST_GH_TOKEN"] = tok
		start := time.Now()
		checks = set.CheckGitHub(ctx)
		took := time.Since(start)
		if took > 5*time.Second {
			t.Errorf("token %q: the check took %v against a silent peer", tok, took)
		}
		for _, c := range checks {
			msg := ""
			if c.Err != nil {
				msg = c.Err.Error()
			}
			if c.Err == nil || !strings.Contains(msg, "timeout") || strings.Contains(msg, ghToken) {
				t.Errorf("silent peer, token %q: %s: %v", tok, c.Name, c.Err)
			}
			if tok == "" && !strings.Contains(msg, "token variable TEST_GH_TOKEN is empty, and GitHub does not answer at") {
				t.Errorf("silent peer, no token: %v", c.Err)
			}
		}
		t.Logf("silent peer, token %v: %d checks failed in %v", tok != "", len(checks), took.Round(time.Millisecond))
	}
}
