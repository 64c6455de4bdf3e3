package repos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sweepboard/release/fixtures/gitserver"
	"github.com/sweepboard/release/stages"
)

// train is n bare repos repo01…repoNN under root, each with two commits, and
// a pre-receive hook in each that counts pushes in root/pushes.
type train struct {
	root    string
	remotes map[string]*remoteRepo
	names   []string
}

func newTrain(t testing.TB, n int) *train {
	t.Helper()
	tr := &train{root: t.TempDir(), remotes: map[string]*remoteRepo{}}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("repo%02d", i)
		tr.remotes[name] = newRemote(t, tr.root, name, "feat: init "+name, "fix: second "+name)
		tr.names = append(tr.names, name)
		tr.hook(t, name, "pre-receive", "cat >/dev/null\necho "+name+" >> "+filepath.Join(tr.root, "pushes")+"\n")
	}
	return tr
}

func (tr *train) hook(t testing.TB, name, hook, script string) {
	t.Helper()
	path := filepath.Join(tr.remotes[name].Bare, "hooks", hook)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// pushes returns the repos that received a push, in order, and resets the
// count.
func (tr *train) pushes(t testing.TB) []string {
	t.Helper()
	path := filepath.Join(tr.root, "pushes")
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	return strings.Fields(string(b))
}

func (tr *train) spec() *stages.Spec { return specOf(tr.root, tr.remotes) }

// lsTags is `git ls-remote --tags` of a repo: tag ref → object.
func lsTags(t testing.TB, url string) map[string]string {
	t.Helper()
	out := gitCLI(t, ".", "ls-remote", "--tags", url)
	tags := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if sha, ref, ok := strings.Cut(line, "\t"); ok {
			tags[ref] = sha
		}
	}
	return tags
}

// checkAnnotated checks with the git CLI that tag in the bare repo is an
// annotated tag object pointing at commit, with the version in its message.
func checkAnnotated(t testing.TB, bare, tag, commit string) {
	t.Helper()
	tags := lsTags(t, bare)
	obj, ok := tags["refs/tags/"+tag]
	if !ok {
		t.Errorf("%s: no tag %s (ls-remote: %v)", bare, tag, tags)
		return
	}
	if got := tags["refs/tags/"+tag+"^{}"]; got != commit {
		t.Errorf("%s: %s^{} = %s, want the pinned %s", bare, tag, got, commit)
	}
	if typ := gitCLI(t, bare, "cat-file", "-t", obj); typ != "tag" {
		t.Errorf("%s: %s is a %s, want an annotated tag", bare, tag, typ)
	}
	body := gitCLI(t, bare, "cat-file", "-p", obj)
	for _, want := range []string{"object " + commit, "type commit", "tag " + tag, "Release " + tag} {
		if !strings.Contains(body, want) {
			t.Errorf("%s: tag object lacks %q:\n%s", bare, want, body)
		}
	}
}

func outcomes(results []TagResult) map[string]Outcome {
	m := map[string]Outcome{}
	for _, r := range results {
		m[r.Repo] = r.Outcome
	}
	return m
}

func all(names []string, o Outcome) map[string]Outcome {
	m := map[string]Outcome{}
	for _, n := range names {
		m[n] = o
	}
	return m
}

func TestTagEightRepos(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 8)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(tr.spec(), work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A commit lands on repo03's branch after the run pinned its commits.
	late := tr.remotes["repo03"]
	lateSHA := late.commit("feat: after pinning")
	late.push()
	tr.pushes(t)

	results, err := New(tr.spec(), work).Tag(ctx, "1.4.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Pushed), outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	for _, name := range tr.names {
		checkAnnotated(t, tr.remotes[name].Bare, "v1.4.0", pinned[name])
	}
	if pinned["repo03"] == lateSHA {
		t.Fatal("the late commit was pinned")
	}
	body := gitCLI(t, tr.remotes["repo03"].Bare, "cat-file", "-p", "v1.4.0")
	if !strings.Contains(body, "repo03: 2 commits (features 1, bug fixes 1)") {
		t.Errorf("tag message lacks the summary:\n%s", body)
	}
	if got := tr.pushes(t); len(got) != 8 {
		t.Errorf("pushes = %v, want 8", got)
	}

	// A re-run, with a fresh Set as a resumed run has, pushes nothing.
	results, err = New(tr.spec(), work).Tag(ctx, "v1.4.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Adopted), outcomes(results)); diff != "" {
		t.Errorf("re-run outcomes (-want +got):\n%s", diff)
	}
	if got := tr.pushes(t); len(got) != 0 {
		t.Errorf("re-run pushed to %v", got)
	}
}

func TestTagConflictPushesNothing(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 8)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(tr.spec(), work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r6 := tr.remotes["repo06"]
	other := gitCLI(t, r6.Work, "rev-parse", "HEAD~1")
	r6.tag("v2.0.0", other)
	tr.pushes(t)

	results, err := New(tr.spec(), work).Tag(ctx, "2.0.0", pinned, TagOptions{})
	if err == nil {
		t.Fatal("Tag succeeded over a conflicting tag")
	}
	for _, want := range []string{"repo06", "v2.0.0", other, pinned["repo06"], "nothing pushed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	want := all(tr.names, Skipped)
	want["repo06"] = Failed
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if got := tr.pushes(t); len(got) != 0 {
		t.Errorf("pushed to %v", got)
	}
	for _, name := range tr.names {
		tags := lsTags(t, tr.remotes[name].Bare)
		if name != "repo06" && len(tags) != 0 {
			t.Errorf("%s has tags %v", name, tags)
		}
	}
	if tags := lsTags(t, r6.Bare); tags["refs/tags/v2.0.0^{}"] != other {
		t.Errorf("repo06's tag moved: %v", tags)
	}
}

func TestTagHookRejectsThenResume(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 8)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(tr.spec(), work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr.hook(t, "repo05", "pre-receive", "cat >/dev/null\necho repo05-refused >> "+filepath.Join(tr.root, "pushes")+"\necho 'tags are frozen until Monday' >&2\nexit 1\n")
	tr.pushes(t)

	results, err := New(tr.spec(), work, WithParallel(3)).Tag(ctx, "3.1.0", pinned, TagOptions{})
	if err == nil {
		t.Fatal("Tag succeeded through a rejecting hook")
	}
	t.Logf("rejected: %v", err)
	var rejected *RejectedError
	if !errors.As(err, &rejected) {
		t.Errorf("error %q is not a *RejectedError", err)
	}
	for _, want := range []string{"repo05", tr.remotes["repo05"].Bare, "pre-receive hook declined", "tags are frozen until Monday"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	want := all(tr.names, Pushed)
	want["repo05"] = Failed
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	// One push reached repo05's hook: a refusal is not tried again. The
	// seven tags pushed before it stay (a published tag is never deleted).
	got := tr.pushes(t)
	slices.Sort(got)
	wantPushes := slices.DeleteFunc(slices.Clone(tr.names), func(n string) bool { return n == "repo05" })
	wantPushes = append(wantPushes, "repo05-refused")
	slices.Sort(wantPushes)
	if diff := cmp.Diff(wantPushes, got); diff != "" {
		t.Errorf("pushes (-want +got):\n%s", diff)
	}
	for _, name := range tr.names {
		_, has := lsTags(t, tr.remotes[name].Bare)["refs/tags/v3.1.0"]
		if has != (name != "repo05") {
			t.Errorf("%s has the tag: %v", name, has)
		}
	}

	tr.hook(t, "repo05", "pre-receive", "cat >/dev/null\necho repo05 >> "+filepath.Join(tr.root, "pushes")+"\n")
	results, err = New(tr.spec(), work).Tag(ctx, "3.1.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want = all(tr.names, Adopted)
	want["repo05"] = Pushed
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("resume outcomes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"repo05"}, tr.pushes(t)); diff != "" {
		t.Errorf("resume pushes (-want +got):\n%s", diff)
	}
	for _, name := range tr.names {
		checkAnnotated(t, tr.remotes[name].Bare, "v3.1.0", pinned[name])
	}
}

func TestTagBadInput(t *testing.T) {
	tr := newTrain(t, 1)
	set := New(tr.spec(), t.TempDir())
	ctx := context.Background()
	for _, tt := range []struct {
		name, version string
		commits       map[string]string
		err           string
	}{
		{"bad version", "1.x", map[string]string{"repo01": tr.remotes["repo01"].head()}, `parse version "1.x": invalid semantic version`},
		{"missing commit", "1.0.0", nil, "tag v1.0.0: no pinned commit for repo repo01"},
		{"not a sha", "1.0.0", map[string]string{"repo01": "main"}, `check tag v1.0.0, nothing pushed: repo repo01: pinned commit "main" is not a SHA`},
		{"unknown commit", "1.0.0", map[string]string{"repo01": strings.Repeat("ab", 20)}, "check tag v1.0.0, nothing pushed: find commit abababababababababababababababababababab in repo repo01: not on the remote"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := set.Tag(ctx, tt.version, tt.commits, TagOptions{})
			if err == nil || err.Error() != tt.err {
				t.Errorf("err = %v\nwant %s", err, tt.err)
			}
		})
	}
}

func TestTagOverHTTPWithToken(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 8)
	const token = "ghs_test_token_1234567890"
	srv := gitserver.Start(t, tr.root, token)
	spec := tr.spec()
	for name, r := range spec.Repos {
		r.URL = srv.URL + "/" + name + ".git"
		r.TokenEnv = "TEST_GIT_TOKEN"
		spec.Repos[name] = r
	}
	env := map[string]string{"TEST_GIT_TOKEN": token}
	getenv := func(k string) string { return env[k] }
	work := filepath.Join(tr.root, ".release")

	pinned, err := New(spec, work, WithGetenv(getenv)).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	results, err := New(spec, work, WithGetenv(getenv)).Tag(ctx, "1.0.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Pushed), outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if srv.Pushes() != 8 {
		t.Errorf("receive-pack requests = %d, want 8", srv.Pushes())
	}
	for _, name := range tr.names {
		checkAnnotated(t, tr.remotes[name].Bare, "v1.0.0", pinned[name])
	}

	results, err = New(spec, work, WithGetenv(getenv)).Tag(ctx, "1.0.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Adopted), outcomes(results)); diff != "" {
		t.Errorf("re-run outcomes (-want +got):\n%s", diff)
	}
	if srv.Pushes() != 8 {
		t.Errorf("re-run made %d receive-pack requests", srv.Pushes()-8)
	}

	// A wrong token: the error names the remote, never the token.
	env["TEST_GIT_TOKEN"] = "wrong-token-value-42"
	results, err = New(spec, work, WithGetenv(getenv)).Tag(ctx, "1.1.0", pinned, TagOptions{})
	if err == nil {
		t.Fatal("Tag succeeded with a wrong token")
	}
	t.Logf("wrong token: %v", err)
	msg := err.Error() + fmt.Sprint(results)
	if !strings.Contains(msg, srv.URL+"/repo01.git") || !strings.Contains(msg, "authentication required") {
		t.Errorf("error does not name the remote and the cause: %s", err)
	}
	for _, secret := range []string{token, "wrong-token-value-42"} {
		if strings.Contains(msg, secret) {
			t.Errorf("a token leaked into the error: %s", msg)
		}
	}
	if srv.Pushes() != 8 {
		t.Errorf("a push got through with a wrong token")
	}
	if diff := cmp.Diff(all(tr.names, Failed), outcomes(results), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("wrong-token outcomes (-want +got):\n%s", diff)
	}
}

func TestTagRewrittenBranch(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 2)
	work := filepath.Join(tr.root, ".release")
	set := New(tr.spec(), work)
	pinned, err := set.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// repo02's pinned commit is rewritten away after the run started.
	r := tr.remotes["repo02"]
	gitCLI(t, r.Work, "reset", "-q", "--hard", "HEAD~1")
	gitCLI(t, r.Work, "commit", "-q", "--allow-empty", "-m", "fix: rewritten")
	gitCLI(t, r.Work, "push", "-q", "-f", "origin", "main")
	tr.pushes(t)

	// The same Set, whose mirror was fetched before the rewrite.
	results, err := set.Tag(ctx, "1.0.0", pinned, TagOptions{})
	if err == nil || !strings.Contains(err.Error(), "repo repo02: pinned commit "+pinned["repo02"]+" is not on branch main") {
		t.Fatalf("err = %v", err)
	}
	if diff := cmp.Diff(map[string]Outcome{"repo01": Skipped, "repo02": Failed}, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if got := tr.pushes(t); len(got) != 0 {
		t.Errorf("pushed to %v", got)
	}
}
