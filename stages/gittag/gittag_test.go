package gittag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/gitserver"
	"github.com/sweepboard/release/stages"
)

// eight makes eight bare repos whose pre-receive hooks append their name to
// root/pushes, and the Env of a run with their heads pinned.
func eight(t *testing.T) (root string, env *stages.Env, bares map[string]string) {
	t.Helper()
	root = t.TempDir()
	spec := &stages.Spec{Name: "t", Dir: root, Repos: map[string]stages.Repo{}}
	commits := map[string]string{}
	bares = map[string]string{}
	for i := 1; i <= 8; i++ {
		name := fmt.Sprintf("repo%d", i)
		bare, head := gitserver.MakeRepo(t, root, name, "feat: init", "fix: "+name)
		gitserver.Hook(t, bare, "pre-receive", "cat >/dev/null\necho "+name+" >> "+filepath.Join(root, "pushes")+"\n")
		spec.Repos[name] = stages.Repo{URL: name + ".git", Branch: "main"}
		commits[name], bares[name] = head, bare
	}
	env = &stages.Env{
		RunID: "r1", RunKind: "run", Version: "1.0.0", Node: "tag", Stage: "tag",
		Spec: spec, WorkDir: filepath.Join(root, ".release"), Commits: commits,
		Log: &bytes.Buffer{},
	}
	return root, env, bares
}

func pushes(t *testing.T, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "pushes"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "pushes"))
	return strings.Fields(string(b))
}

func every(o string) stages.Outputs {
	out := stages.Outputs{}
	for i := 1; i <= 8; i++ {
		out[fmt.Sprintf("repo%d", i)] = o
	}
	return out
}

func TestRunPartialFailureThenResume(t *testing.T) {
	ctx := context.Background()
	root, env, bares := eight(t)
	stage := Kind.New()
	gitserver.Hook(t, bares["repo5"], "pre-receive", "cat >/dev/null\necho repo5-refused >> "+filepath.Join(root, "pushes")+"\necho 'frozen' >&2\nexit 1\n")

	out, err := stage.Run(ctx, env)
	if err == nil {
		t.Fatal("the stage succeeded through a rejecting hook")
	}
	for _, want := range []string{"repo5", bares["repo5"], "rejected by the remote", "pre-receive hook declined", "frozen"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// The executor must not retry a refusal: only a changed remote helps.
	if !stages.IsPermanent(err) {
		t.Errorf("a rejected push is not marked permanent: %v", err)
	}
	want := every("pushed")
	want["repo5"] = "failed"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	got := pushes(t, root)
	if len(got) != 8 || !slices.Contains(got, "repo5-refused") {
		t.Errorf("pushes = %v, want seven and one refused", got)
	}
	if log := env.Log.(*bytes.Buffer).String(); !strings.Contains(log, "repo5: failed v1.0.0 at ") || !strings.Contains(log, "frozen") {
		t.Errorf("log:\n%s", log)
	}

	gitserver.Hook(t, bares["repo5"], "pre-receive", "cat >/dev/null\necho repo5 >> "+filepath.Join(root, "pushes")+"\n")
	out, err = stage.Run(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	want = every("adopted")
	want["repo5"] = "pushed"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("resume outputs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"repo5"}, pushes(t, root)); diff != "" {
		t.Errorf("resume pushes (-want +got):\n%s", diff)
	}

	out, err = stage.Run(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(every("adopted"), out); diff != "" {
		t.Errorf("re-run outputs (-want +got):\n%s", diff)
	}
	if got := pushes(t, root); len(got) != 0 {
		t.Errorf("re-run pushed to %v", got)
	}
	for name, bare := range bares {
		got := gitserver.Git(t, ".", "ls-remote", "--tags", bare, "refs/tags/v1.0.0^{}")
		if !strings.HasPrefix(got, env.Commits[name]) {
			t.Errorf("%s: v1.0.0^{} = %q, want %s", name, got, env.Commits[name])
		}
	}
}

func TestRunConflictIsPermanent(t *testing.T) {
	root, env, bares := eight(t)
	first := gitserver.Git(t, bares["repo2"], "rev-parse", "main~1")
	gitserver.Git(t, bares["repo2"], "tag", "v1.0.0", first)
	out, err := Kind.New().Run(context.Background(), env)
	if err == nil || !stages.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent error", err)
	}
	for _, want := range []string{"repo2", "v1.0.0", first, env.Commits["repo2"]} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
	if out["repo2"] != "failed" || out["repo1"] != "skipped" {
		t.Errorf("outputs = %v", out)
	}
	if got := pushes(t, root); len(got) != 0 {
		t.Errorf("pushed to %v", got)
	}
}

func TestRunWithoutVersion(t *testing.T) {
	_, env, _ := eight(t)
	env.Version = ""
	if _, err := Kind.New().Run(context.Background(), env); err == nil || !stages.IsPermanent(err) {
		t.Errorf("err = %v", err)
	}
}

func TestValidateAndDoctor(t *testing.T) {
	_, env, _ := eight(t)
	if err := (&Stage{Parallel: -1}).Validate(env.Spec); err == nil {
		t.Error("negative parallel accepted")
	}
	if err := (&Stage{}).Validate(&stages.Spec{}); err == nil {
		t.Error("no repos accepted")
	}
	env.Spec.Repos["gone"] = stages.Repo{URL: "gone.git"}
	// Checks run in any order, as doctor runs them side by side; the push
	// probe of the remote that does not answer is not made.
	var failed, notChecked []string
	checks := (&Stage{}).Doctor(context.Background(), env.Spec)
	for i := len(checks) - 1; i >= 0; i-- {
		c := checks[i]
		switch err := c.Run(context.Background()); {
		case errors.Is(err, stages.ErrNotChecked):
			notChecked = append(notChecked, c.Name)
		case err != nil:
			failed = append(failed, c.Name)
		}
	}
	if diff := cmp.Diff([]string{"tag push to repo gone allowed"}, notChecked); diff != "" {
		t.Errorf("doctor checks not made (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"git remote of repo gone"}, failed); diff != "" {
		t.Errorf("doctor failures (-want +got):\n%s", diff)
	}
}
