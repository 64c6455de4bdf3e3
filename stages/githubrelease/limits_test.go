package githubrelease

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/pipeline/retry"
)

// GitHub's rate limits as the issue lists them, each on web's create,
// against the fake over HTTP: the stage waits each out, creates each
// release once (one 201 among web's POSTs), and reports the wait: a line
// per wait in the stage's log, the total on the repo's line and in its
// outputs. The secondary limit's minute is shortened by the Stage's policy.
func TestRunWaitsOutRateLimits(t *testing.T) {
	tests := []struct {
		name   string
		fault  fakegithub.Fault
		status int    // of the faulted POST
		reason string // in the wait's line
		least  time.Duration
	}{
		{"429 primary", fakegithub.Fault{Kind: fakegithub.PrimaryLimit429, Reset: time.Second}, http.StatusTooManyRequests, "primary rate limit (429)", time.Second},
		{"429 secondary without Retry-After", fakegithub.Fault{Kind: fakegithub.SecondaryLimit429}, http.StatusTooManyRequests, "secondary rate limit (429)", 400 * time.Millisecond},
		{"403 with X-RateLimit-Remaining: 0", fakegithub.Fault{Kind: fakegithub.PrimaryLimit, Reset: time.Second}, http.StatusForbidden, "primary rate limit (403)", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, fake := setup(t)
			tm := serveTimed(t, env, fake)
			logs := logTo(env)
			tt.fault.Method, tt.fault.Path = "POST", "/web/"
			fake.Inject(tt.fault)
			stage := &Stage{Retry: retry.Policy{SecondaryWait: 400 * time.Millisecond}}

			out, err := stage.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			var posts []int
			for _, h := range tm.of("/web/") {
				if h.method == http.MethodPost {
					posts = append(posts, h.status)
				}
			}
			if len(posts) != 2 || posts[0] != tt.status || posts[1] != http.StatusCreated {
				t.Errorf("web's POSTs answered %v, want [%d 201]", posts, tt.status)
			}
			for _, repo := range []string{"api", "web"} {
				if rels := fake.Releases("sweepboard", repo); len(rels) != 1 || rels[0].TagName != "v0.1.0" || rels[0].Draft {
					t.Errorf("%s releases = %+v, want one published v0.1.0", repo, rels)
				}
			}
			waited, err := time.ParseDuration(out["web.waited"])
			if err != nil || waited < tt.least || out["web"] != "created" {
				t.Errorf("outputs = %v, want web created, waited at least %v", out, tt.least)
			}
			stageLog := env.Log.(*bytes.Buffer).String()
			wait := regexp.MustCompile(`(?m)^publish release v0\.1\.0 of sweepboard/web: attempt 1 of 5 failed \(` + regexp.QuoteMeta(tt.reason) + `\); waiting [0-9.]+m?s, as the peer asked$`)
			done := regexp.MustCompile(`(?m)^web: created release v0\.1\.0 of sweepboard/web http://\S+ \(waited ` + regexp.QuoteMeta(out["web.waited"]) + ` for GitHub's rate limit\)$`)
			if !wait.MatchString(stageLog) || !done.MatchString(stageLog) {
				t.Errorf("the stage's log lacks the wait or the total:\n%s", stageLog)
			}
			for where, text := range map[string]string{"stage log": stageLog, "logger": logs.String()} {
				if strings.Contains(text, token) {
					t.Errorf("the token is in the %s:\n%s", where, text)
				}
			}
			t.Logf("%s: the stage's log:\n%s", tt.name, stageLog)
		})
	}
}

// The doctor asks GitHub even without a token: the check fails naming
// the empty variable and says that GitHub answers.
func TestDoctorWithoutToken(t *testing.T) {
	env, fake := setup(t)
	t.Setenv("TEST_GITHUB_TOKEN", "")
	checks := (&Stage{}).Doctor(context.Background(), env.Spec)
	if len(checks) != 1 || checks[0].Err == nil ||
		!strings.HasPrefix(checks[0].Err.Error(), "github: token variable TEST_GITHUB_TOKEN is empty; GitHub answers at "+env.Spec.GitHub.APIURL) {
		t.Errorf("checks = %+v", checks)
	}
	if got := fake.Requests(); len(got) != 1 || got[0] != "GET /rate_limit" {
		t.Errorf("requests = %v, want one GET /rate_limit", got)
	}

	t.Setenv("TEST_GITHUB_TOKEN", token)
	checks = (&Stage{}).Doctor(context.Background(), env.Spec)
	if len(checks) != 2 || checks[0].Err != nil || checks[1].Err != nil || checks[0].Name != "github releases of sweepboard/api" {
		t.Errorf("with the token: %+v", checks)
	}
}
