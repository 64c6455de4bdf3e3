package repos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/pipeline/retry"
)

const ghToken = "ghp_fake_token_0123456789"

// ghSet is a Set over three repos whose release v1.1.0 is tagged, with its
// GitHub block pointed at a fresh fake.
func ghSet(t *testing.T) (*Set, *fakegithub.Server, map[string]string) {
	t.Helper()
	h := history{
		"api":    {"feat: init", "tag v1.0.0", "feat: login", "tag v1.1.0"},
		"web":    {"feat: init", "tag v1.0.0", "fix: colour", "tag v1.1.0"},
		"worker": {"feat: init", "tag v1.0.0", "tag v1.1.0"},
	}
	set, _, _ := h.build(t)
	fake := fakegithub.New(ghToken)
	set.spec.GitHub.Owner = "sweepboard"
	set.spec.GitHub.APIURL = fake.Start(t)
	set.spec.GitHub.TokenEnv = "TEST_GH_TOKEN"
	env := map[string]string{"TEST_GH_TOKEN": ghToken}
	set.getenv = func(k string) string { return env[k] }
	set.ghRetry = retry.Policy{Backoff: 10 * time.Millisecond, SecondaryWait: 300 * time.Millisecond}
	return set, fake, env
}

func releaseOutcomes(rels []Release) map[string]Outcome {
	m := map[string]Outcome{}
	for _, r := range rels {
		m[r.Repo] = r.Outcome
	}
	return m
}

func checkOneReleaseEach(t *testing.T, fake *fakegithub.Server) {
	t.Helper()
	for _, repo := range []string{"api", "web", "worker"} {
		rels := fake.Releases("sweepboard", repo)
		if len(rels) != 1 || rels[0].TagName != "v1.1.0" || rels[0].Draft {
			t.Errorf("%s releases = %+v, want one published v1.1.0", repo, rels)
			continue
		}
		if !strings.HasPrefix(rels[0].Body, "## "+repo+" v1.1.0\n") {
			t.Errorf("%s body = %q", repo, rels[0].Body)
		}
	}
}

func TestReleasesCreateThenRerun(t *testing.T) {
	ctx := context.Background()
	set, fake, _ := ghSet(t)
	rels, err := set.Releases(ctx, "1.1.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Outcome{"api": Created, "web": Created, "worker": Created}
	if diff := cmp.Diff(want, releaseOutcomes(rels)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	checkOneReleaseEach(t, fake)
	if got := fake.Releases("sweepboard", "web")[0].Body; !strings.Contains(got, "### Bug fixes\n\n- colour (") {
		t.Errorf("web body lacks its changelog:\n%s", got)
	}
	if rels[0].URL == "" || rels[0].ID == 0 {
		t.Errorf("release without URL or ID: %+v", rels[0])
	}
	if fake.Mutations() != 3 {
		t.Errorf("mutations = %d, want 3", fake.Mutations())
	}

	rels, err = set.Releases(ctx, "v1.1.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]Outcome{"api": Adopted, "web": Adopted, "worker": Adopted}
	if diff := cmp.Diff(want, releaseOutcomes(rels)); diff != "" {
		t.Errorf("re-run outcomes (-want +got):\n%s", diff)
	}
	if fake.Mutations() != 3 {
		t.Errorf("re-run made %d mutating requests", fake.Mutations()-3)
	}
}

func TestReleasesAdoptDraftBeyondFirstPage(t *testing.T) {
	set, fake, _ := ghSet(t)
	draft := fake.AddRelease("sweepboard", "api", fakegithub.Release{TagName: "v1.1.0", Draft: true, Body: "half-written"})
	for i := range 120 {
		fake.AddRelease("sweepboard", "api", fakegithub.Release{TagName: fmt.Sprintf("v0.0.%d", i)})
	}
	rels, err := set.Releases(context.Background(), "1.1.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rels[0].Outcome != Published || rels[0].ID != draft.ID {
		t.Errorf("api = %+v, want the draft %d published", rels[0], draft.ID)
	}
	var got []fakegithub.Release
	for _, r := range fake.Releases("sweepboard", "api") {
		if r.TagName == "v1.1.0" {
			got = append(got, r)
		}
	}
	if len(got) != 1 || got[0].Draft || !strings.HasPrefix(got[0].Body, "## api v1.1.0") {
		t.Errorf("api v1.1.0 releases = %+v", got)
	}
}

func TestReleasesFaults(t *testing.T) {
	tests := []struct {
		name   string
		faults []fakegithub.Fault
		want   Outcome // api's outcome
		slow   time.Duration
	}{
		{"created then response dropped", []fakegithub.Fault{{Kind: fakegithub.DropResponse, Method: "POST", Path: "/api/"}}, Adopted, 0},
		{"5xx on create", []fakegithub.Fault{{Kind: fakegithub.ServerError, Method: "POST", Path: "/api/", Count: 2}}, Created, 0},
		{"5xx on lookup", []fakegithub.Fault{{Kind: fakegithub.ServerError, Method: "GET", Path: "/api/"}}, Created, 0},
		{"422 already_exists", []fakegithub.Fault{{Kind: fakegithub.AlreadyExists, Method: "POST", Path: "/api/"}}, Created, 0},
		{"secondary rate limit", []fakegithub.Fault{{Kind: fakegithub.RateLimit, Method: "POST", Path: "/api/", RetryAfter: 1}}, Created, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, fake, _ := ghSet(t)
			for _, f := range tt.faults {
				fake.Inject(f)
			}
			start := time.Now()
			rels, err := set.Releases(context.Background(), "1.1.0", nil)
			if err != nil {
				t.Fatal(err)
			}
			if rels[0].Outcome != tt.want {
				t.Errorf("api outcome = %s, want %s", rels[0].Outcome, tt.want)
			}
			if took := time.Since(start); took < tt.slow {
				t.Errorf("took %v, less than the Retry-After %v", took, tt.slow)
			}
			checkOneReleaseEach(t, fake)
		})
	}
}

func TestReleasesGiveUp(t *testing.T) {
	set, fake, _ := ghSet(t)
	set.ghRetry.Attempts = 3
	fake.Inject(fakegithub.Fault{Kind: fakegithub.ServerError, Path: "/worker/", Count: 100})
	rels, err := set.Releases(context.Background(), "1.1.0", nil)
	if err == nil || !strings.Contains(err.Error(), "publish release v1.1.0 of sweepboard/worker") || !strings.Contains(err.Error(), "502") {
		t.Fatalf("err = %v", err)
	}
	want := map[string]Outcome{"api": Created, "web": Created, "worker": Failed}
	if diff := cmp.Diff(want, releaseOutcomes(rels)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	var worker int
	for _, r := range fake.Requests() {
		if strings.Contains(r, "/worker/") {
			worker++
		}
	}
	if worker != 3 {
		t.Errorf("worker requests = %d, want 3 (one per attempt)", worker)
	}
}

func TestReleasesWrongToken(t *testing.T) {
	set, fake, env := ghSet(t)
	env["TEST_GH_TOKEN"] = "ghp_wrong_value_987"
	rels, err := set.Releases(context.Background(), "1.1.0", nil)
	if err == nil {
		t.Fatal("Releases succeeded with a wrong token")
	}
	msg := err.Error() + fmt.Sprint(rels)
	if !strings.Contains(msg, "401 Bad credentials") || !strings.Contains(msg, "sweepboard/api") {
		t.Errorf("error does not say what failed: %s", msg)
	}
	if strings.Contains(msg, "ghp_wrong_value_987") || strings.Contains(msg, ghToken) {
		t.Errorf("token in the error: %s", msg)
	}
	if len(fake.Requests()) != 0 {
		t.Errorf("requests passed the token check: %v", fake.Requests())
	}

	env["TEST_GH_TOKEN"] = ""
	if _, err := set.Releases(context.Background(), "1.1.0", nil); err == nil || err.Error() != "github: token variable TEST_GH_TOKEN is empty" {
		t.Errorf("empty token: err = %v", err)
	}
}
