package main

// The branches of #17 against the real parts, as TestFlow runs them (the
// real binary, Docker engine, registry, Caddy, bare git remotes, the fake
// GitHub API):
//
//	TestHotfix        a hotfix from release/1.4 while main has moved on
//	TestBranchDeploy  a feature branch of one repo on dev, beside a release
//
// As root:
//
//	eval "$(fixtures/up.sh)"
//	go test -count=1 -timeout 20m -run 'TestHotfix|TestBranchDeploy' ./cmd/release

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// git runs git in the flow's work clone of repo (fixtures/mkrepos.sh
// made it) and returns its output.
func (f *flow) git(repo string, args ...string) string {
	f.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = filepath.Join(f.dir, "repos", "work", repo)
	cmd.Env = append(f.env(), "GIT_AUTHOR_NAME=Fixture Dev", "GIT_AUTHOR_EMAIL=dev@sweepboard.test",
		"GIT_COMMITTER_NAME=Fixture Dev", "GIT_COMMITTER_EMAIL=dev@sweepboard.test", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), repo, err, out)
	}
	return strings.TrimSpace(string(out))
}

// branch makes branch in repo's remote at from with one commit on it, and
// returns that commit; main is left checked out.
func (f *flow) branch(repo, branch, from, subject string) string {
	f.t.Helper()
	f.git(repo, "fetch", "-q", "--tags", "origin")
	f.git(repo, "checkout", "-q", "-B", branch, from)
	f.git(repo, "commit", "-q", "--allow-empty", "-m", subject)
	sha := f.git(repo, "rev-parse", "HEAD")
	f.git(repo, "push", "-q", "origin", branch)
	f.git(repo, "checkout", "-q", "main")
	return sha
}

// commitMain adds a commit to repo's main and pushes it.
func (f *flow) commitMain(repo, subject string) string {
	f.t.Helper()
	f.git(repo, "checkout", "-q", "main")
	f.git(repo, "pull", "-q", "--ff-only", "origin", "main")
	f.git(repo, "commit", "-q", "--allow-empty", "-m", subject)
	f.git(repo, "push", "-q", "origin", "main")
	return f.git(repo, "rev-parse", "HEAD")
}

// TestHotfix: 1.4.0 is released, main moves on to 1.5.0, and a fix on
// release/1.4 of api is released with --ref: 1.4.1, tagged at the release
// branch's head in api and at 1.4.0's commits in auth and web, deployed to
// prod by digest, its GitHub releases not the latest; the next regular
// release is 1.6.0, from main.
func TestHotfix(t *testing.T) {
	f := newFlow(t, "hotfix")
	v140 := f.run(f.mustRelease("run", "--version", "1.4.0", "--yes").id())
	if v140.Status != "succeeded" {
		t.Fatalf("1.4.0: %s", v140.Status)
	}
	fix := f.branch("api", "release/1.4", "v1.4.0", "fix: the hotfix of 1.4")
	mainAPI := f.commitMain("api", "feat: what 1.5.0 brings")
	v150 := f.run(f.mustRelease("run", "--yes").id())
	if v150.Version != "1.5.0" || v150.Commits["api"] != mainAPI {
		t.Fatalf("the release from main: %s at api %s, want 1.5.0 at %s", v150.Version, v150.Commits["api"], mainAPI)
	}

	// Bad refs: refused before anything is made, naming repo and ref.
	before := len(f.runs())
	for _, tc := range []struct{ ref, msg string }{
		{"api=release/9.9", `release: --ref api=release/9.9: repo api has no branch, tag or commit "release/9.9"`},
		{"db=main", "release: --ref db=main: the pipeline has no repo db (repos: api, auth, web)"},
	} {
		r := f.release("run", "--ref", tc.ref, "--yes")
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) || r.stdout != "" {
			t.Errorf("run --ref %s: want exit 2 and %q, got\n%s", tc.ref, tc.msg, r)
		}
	}
	if n := len(f.runs()); n != before {
		t.Errorf("bad refs made %d runs", n-before)
	}

	r := f.mustRelease("run", "--ref", "api=release/1.4", "--yes")
	hot := f.run(r.id())
	if hot.Version != "1.4.1" || hot.Status != "succeeded" {
		t.Fatalf("hotfix: version %s status %s, want 1.4.1 succeeded\n%s", hot.Version, hot.Status, r)
	}
	if hot.Refs["api"] != "release/1.4" {
		t.Errorf("hotfix run refs %v, want api=release/1.4", hot.Refs)
	}
	want := map[string]string{"api": fix, "auth": v140.Commits["auth"], "web": v140.Commits["web"]}
	for repo, c := range want {
		if hot.Commits[repo] != c {
			t.Errorf("hotfix built %s at %s, want %s", repo, hot.Commits[repo], c)
		}
		if got := f.tagCommit(repo, "v1.4.1"); got != c {
			t.Errorf("v1.4.1 of %s is at %s, want %s", repo, got, c)
		}
		if got := f.tagCommit(repo, "v1.5.0"); got != v150.Commits[repo] {
			t.Errorf("v1.5.0 of %s moved to %s", repo, got)
		}
		if l, ok := f.gh.Latest("sweepboard", repo); !ok || l.TagName != "v1.5.0" {
			t.Errorf("the latest GitHub release of %s is %q, want v1.5.0", repo, l.TagName)
		}
	}
	f.checkRunning("prod", hot.Images)
	f.checkStatus(f.status(), "prod", "1.4.1", hot.Images)

	next := f.run(f.mustRelease("run", "--yes").id())
	if next.Version != "1.6.0" || next.Commits["api"] != mainAPI || len(next.Refs) != 0 {
		t.Errorf("the next release from main: %s at api %s refs %v, want 1.6.0 at %s", next.Version, next.Commits["api"], next.Refs, mainAPI)
	}
	f.checkRunning("prod", next.Images)
}

// TestBranchDeploy: a feature branch of api deployed to dev while dev
// keeps auth and web: its commit runs, no tag appears in any repo, no
// version is consumed, the build is reused the second time, status and
// history show the ref and commit, and promote staging refuses it.
func TestBranchDeploy(t *testing.T) {
	f := newFlow(t, "branch")
	rel := f.run(f.mustRelease("run", "--yes").id())
	if rel.Status != "succeeded" {
		t.Fatalf("the release: %s", rel.Status)
	}
	feat := f.branch("api", "feature/login", "main", "feat: login")
	released := f.checkRunning("dev", rel.Images)
	before := f.snapshot()
	nextBefore := f.mustRelease("version", "next").stdout

	r := f.mustRelease("deploy", "dev", "--ref", "api=feature/login", "--yes")
	d := f.run(r.id())
	if d.Kind != "deploy" || d.Version != "" || d.Status != "succeeded" || d.Refs["api"] != "feature/login" || d.Commits["api"] != feat {
		t.Fatalf("the branch deployment: kind %s version %q status %s refs %v commits %v\n%s", d.Kind, d.Version, d.Status, d.Refs, d.Commits, r)
	}
	for _, svc := range []string{"auth", "web"} {
		if d.Images[svc] != rel.Images[svc] {
			t.Errorf("dev's %s went from %s to %s", svc, rel.Images[svc], d.Images[svc])
		}
	}
	if d.Images["api"] == rel.Images["api"] {
		t.Errorf("dev's api is still %s", d.Images["api"])
	}
	ids := f.checkRunning("dev", d.Images)
	// The services it did not rebuild keep their containers.
	for _, svc := range []string{"auth", "web"} {
		if ids[svc] != released[svc] {
			t.Errorf("dev's %s: container %s replaced by %s", svc, released[svc], ids[svc])
		}
	}
	if c := f.docker("image", "inspect", "--format", `{{index .Config.Labels "release.commit"}}`, ids["api"]); c != feat {
		t.Errorf("dev's api runs an image of commit %s, want %s", c, feat)
	}
	f.checkStatus(f.status(), "dev", "", d.Images)
	for _, e := range f.status().Environments {
		if e.Name == "dev" && (e.Refs["api"] != "feature/login" || e.Commits["api"] != feat || e.RunID != d.ID) {
			t.Errorf("status of dev: refs %v commits %v run %s", e.Refs, e.Commits, e.RunID)
		}
	}
	var hist historyView
	f.jsonOf(&hist, "history", "dev", "--limit", "1")
	if len(hist.Deployments) != 1 || hist.Deployments[0].Kind != "deploy" || hist.Deployments[0].Refs["api"] != "feature/login" || hist.Deployments[0].Commits["api"] != feat {
		t.Errorf("history of dev: %+v", hist.Deployments)
	}
	text := f.mustRelease("history", "dev").stdout
	if !strings.Contains(text, "branch api=feature/login@"+feat[:7]) {
		t.Errorf("history of dev does not show the branch:\n%s", text)
	}

	after := f.snapshot()
	if diff := cmp.Diff(before.Tags, after.Tags); diff != "" {
		t.Errorf("tags after a branch deployment (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before.Releases, after.Releases); diff != "" {
		t.Errorf("GitHub releases after a branch deployment (-before +after):\n%s", diff)
	}
	if next := f.mustRelease("version", "next").stdout; next != nextBefore {
		t.Errorf("version next went from %q to %q", nextBefore, next)
	}

	// Built once per commit: the second time the image is reused.
	again := f.run(f.mustRelease("deploy", "dev", "--ref", "api=feature/login", "--yes").id())
	if diff := cmp.Diff(ids, f.checkRunning("dev", again.Images)); diff != "" {
		t.Errorf("dev's containers after the same branch deployment again (-before +after):\n%s", diff)
	}
	for _, n := range again.Stages {
		if n.ID == "build[api]" && n.Outputs["reused"] != "true" {
			t.Errorf("build[api] of the same commit again: outputs %v, want reused", n.Outputs)
		}
	}
	if again.Images["api"] != d.Images["api"] {
		t.Errorf("the same commit again gave %s, want %s", again.Images["api"], d.Images["api"])
	}

	p := f.release("promote", "staging", "--yes")
	want := "release: nothing to promote: dev runs branch deployment " + again.ID + " (api=feature/login@" + feat[:7] + "), which is never promoted; staging runs " + rel.Version + " already"
	if p.code != 1 || !strings.Contains(p.stderr, want) || p.stdout != "" {
		t.Errorf("promote staging: want exit 1 and %q, got\n%s", want, p)
	}
	f.checkRunning("staging", rel.Images)
}
