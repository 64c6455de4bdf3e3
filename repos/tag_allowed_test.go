package repos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/gitserver"
	"github.com/sweepboard/release/stages"
)

// checkNothingTagged checks that no repo of the train has any tag and that
// no push reached any pre-receive hook.
func checkNothingTagged(t *testing.T, tr *train) {
	t.Helper()
	if got := tr.pushes(t); len(got) != 0 {
		t.Errorf("pushes reached %v", got)
	}
	for _, name := range tr.names {
		if tags := lsTags(t, tr.remotes[name].Bare); len(tags) != 0 {
			t.Errorf("%s has tags %v", name, tags)
		}
	}
}

// checkTaggedOnce checks that every repo has the annotated tag at its
// pinned commit and that each received exactly one push.
func checkTaggedOnce(t *testing.T, tr *train, tag string, pinned map[string]string) {
	t.Helper()
	got := tr.pushes(t)
	slices.Sort(got)
	if diff := cmp.Diff(tr.names, got); diff != "" {
		t.Errorf("pushes (-want +got):\n%s", diff)
	}
	for _, name := range tr.names {
		checkAnnotated(t, tr.remotes[name].Bare, tag, pinned[name])
	}
}

func TestTagReadOnlyTokenPushesNothing(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 5)
	const token, readToken = "ghs_write_token_0123456789", "ghs_read_only_token_9876543210"
	srv := gitserver.Start(t, tr.root, token, gitserver.WithReadToken(readToken))
	env := map[string]string{"GIT_TOKEN": token, "GIT_READ_TOKEN": readToken}
	getenv := func(k string) string { return env[k] }
	spec := tr.spec()
	for name, r := range spec.Repos {
		r.URL = srv.URL + "/" + name + ".git"
		r.TokenEnv = "GIT_TOKEN"
		if name == "repo03" {
			r.TokenEnv = "GIT_READ_TOKEN"
		}
		spec.Repos[name] = r
	}
	work := filepath.Join(tr.root, ".release")
	// The read-only token pins and fetches like the others.
	pinned, err := New(spec, work, WithGetenv(getenv)).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr.pushes(t)

	// What `release doctor` asks: only repo03 would refuse, and asking
	// pushes nothing.
	set := New(spec, work, WithGetenv(getenv))
	for _, name := range tr.names {
		err := set.PushAllowed(ctx, name)
		var denied *PushDeniedError
		switch {
		case name == "repo03" && !errors.As(err, &denied):
			t.Errorf("PushAllowed(repo03) = %v, want a *PushDeniedError", err)
		case name == "repo03" && (strings.Contains(err.Error(), readToken) || !strings.Contains(err.Error(), "GIT_READ_TOKEN")):
			t.Errorf("PushAllowed(repo03) = %q: names no token variable, or shows the token", err)
		case name != "repo03" && err != nil:
			t.Errorf("PushAllowed(%s) = %v", name, err)
		}
	}
	if srv.Pushes() != 0 || srv.Denied() != 1 {
		t.Errorf("after PushAllowed: %d pushes, %d denied; want 0, 1", srv.Pushes(), srv.Denied())
	}
	checkNothingTagged(t, tr)
	denials := srv.Denied()

	results, err := New(spec, work, WithGetenv(getenv)).Tag(ctx, "1.2.0", pinned, TagOptions{})
	if err == nil {
		t.Fatal("Tag succeeded with a read-only token")
	}
	t.Logf("read-only token: %v", err)
	var denied *PushDeniedError
	if !errors.As(err, &denied) || denied.Repo != "repo03" {
		t.Errorf("error %q is not a *PushDeniedError of repo03", err)
	}
	for _, want := range []string{"check tag v1.2.0, nothing pushed", "repo repo03 (" + srv.URL + "/repo03.git)", "pushing is not allowed", "403", "GIT_READ_TOKEN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	msg := err.Error() + fmt.Sprint(results)
	for _, secret := range []string{token, readToken} {
		if strings.Contains(msg, secret) {
			t.Errorf("a token leaked into the error: %s", msg)
		}
	}
	want := all(tr.names, Skipped)
	want["repo03"] = Failed
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if srv.Pushes() != 0 || srv.Denied()-denials != 1 {
		t.Errorf("receive-pack requests: %d pushes, %d denied; want 0, 1 (the probe)", srv.Pushes(), srv.Denied()-denials)
	}
	checkNothingTagged(t, tr)

	// The right credential: every repo tagged, once.
	env["GIT_READ_TOKEN"] = token
	probes := srv.Probes()
	results, err = New(spec, work, WithGetenv(getenv)).Tag(ctx, "1.2.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Pushed), outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if srv.Pushes() != 5 {
		t.Errorf("receive-pack pushes = %d, want 5", srv.Pushes())
	}
	// One discovery per repo for the probe, one for the push.
	if got := srv.Probes() - probes; got != 10 {
		t.Errorf("receive-pack discoveries = %d, want 10", got)
	}
	checkTaggedOnce(t, tr, "v1.2.0", pinned)

	// A resume adopts every tag: no probe, no push.
	probes = srv.Probes()
	results, err = New(spec, work, WithGetenv(getenv)).Tag(ctx, "1.2.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Adopted), outcomes(results)); diff != "" {
		t.Errorf("re-run outcomes (-want +got):\n%s", diff)
	}
	if srv.Pushes() != 5 || srv.Probes() != probes {
		t.Errorf("re-run: %d pushes, %d discoveries; want 5, none", srv.Pushes(), srv.Probes()-probes)
	}

	// The cost of the probe, per repo, next to the listing the check
	// already made.
	set = New(spec, work, WithGetenv(getenv))
	const n = 20
	start := time.Now()
	for range n {
		if err := set.pushAllowed(ctx, "repo01", "v9.9.9"); err != nil {
			t.Fatal(err)
		}
	}
	probe := time.Since(start) / n
	r, err := set.Open(ctx, "repo01")
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for range n {
		if _, err := set.remoteState(ctx, r, "repo01", "v9.9.9"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("HTTP push probe: %v per repo (the check's ref listing: %v)", probe, time.Since(start)/n)
}

// makeReadOnly makes the bare repo unwritable to this process and returns
// how, and a function that undoes it (also run when the test ends). A
// non-root user loses the write bit on refs/tags; root, who ignores mode
// bits, gets a read-only bind mount of the repo, else the immutable
// attribute on refs/tags. When neither can be set up the test fails in CI
// and is skipped elsewhere.
func makeReadOnly(t *testing.T, bare string) (how string, undo func()) {
	t.Helper()
	refs := filepath.Join(bare, "refs", "tags")
	var restore func() error
	var once sync.Once
	undo = func() {
		once.Do(func() {
			if err := restore(); err != nil {
				t.Errorf("undo read-only %s: %v", bare, err)
			}
		})
	}

	if os.Geteuid() != 0 {
		if err := os.Chmod(refs, 0o555); err != nil {
			t.Fatal(err)
		}
		restore = func() error { return os.Chmod(refs, 0o755) }
		t.Cleanup(undo)
		return "mode 0555 on refs/tags", undo
	}
	var errs []error
	err := syscall.Mount(bare, bare, "", syscall.MS_BIND, "")
	if err == nil {
		if err = syscall.Mount("", bare, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err == nil {
			restore = func() error { return syscall.Unmount(bare, 0) }
			t.Cleanup(undo)
			return "read-only bind mount", undo
		}
		if uerr := syscall.Unmount(bare, 0); uerr != nil {
			t.Fatalf("unmount %s: %v", bare, uerr)
		}
	}
	errs = append(errs, fmt.Errorf("read-only bind mount: %w", err))
	out, err := exec.Command("chattr", "+i", refs).CombinedOutput()
	if err == nil {
		restore = func() error {
			if out, err := exec.Command("chattr", "-i", refs).CombinedOutput(); err != nil {
				return fmt.Errorf("chattr -i: %v: %s", err, out)
			}
			return nil
		}
		t.Cleanup(undo)
		return "chattr +i on refs/tags", undo
	}
	errs = append(errs, fmt.Errorf("chattr +i: %v: %s", err, strings.TrimSpace(string(out))))
	msg := "cannot make a repo read-only as root: " + errors.Join(errs...).Error()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return "", nil
}

func TestTagUnwritableFileRemotePushesNothing(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 5)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(tr.spec(), work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr.pushes(t)
	bare := tr.remotes["repo04"].Bare
	how, undo := makeReadOnly(t, bare)
	t.Logf("repo04 made read-only by %s", how)

	results, err := New(tr.spec(), work).Tag(ctx, "2.1.0", pinned, TagOptions{})
	if err == nil {
		t.Fatal("Tag succeeded with an unwritable remote")
	}
	t.Logf("unwritable: %v", err)
	var denied *PushDeniedError
	if !errors.As(err, &denied) || denied.Repo != "repo04" {
		t.Errorf("error %q is not a *PushDeniedError of repo04", err)
	}
	for _, want := range []string{"check tag v2.1.0, nothing pushed", "repo repo04 (" + bare + ")", "pushing is not allowed", "cannot write refs/tags"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	want := all(tr.names, Skipped)
	want["repo04"] = Failed
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	checkNothingTagged(t, tr)

	// The cost of the probe, per repo.
	set := New(tr.spec(), work)
	const n = 1000
	start := time.Now()
	for range n {
		if err := set.pushAllowed(ctx, "repo01", "v9.9.9"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("file push probe: %v per repo", time.Since(start)/n)

	undo()
	results, err = New(tr.spec(), work).Tag(ctx, "2.1.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Pushed), outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	checkTaggedOnce(t, tr, "v2.1.0", pinned)
}

func TestGitDir(t *testing.T) {
	root := t.TempDir()
	bare := filepath.Join(root, "api.git")
	gitCLI(t, root, "init", "-q", "--bare", bare)
	work := filepath.Join(root, "web")
	gitCLI(t, root, "init", "-q", work)
	linked := filepath.Join(root, "linked")
	if err := os.MkdirAll(linked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(linked, ".git"), []byte("gitdir: ../api.git\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{bare, bare},
		{filepath.Join(root, "api"), bare}, // path.git, as git finds it
		{work, filepath.Join(work, ".git")},
		{linked, bare},
		{filepath.Join(root, "none"), ""},
	} {
		if got := gitDir(tt.path); got != tt.want {
			t.Errorf("gitDir(%s) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

// BenchmarkPushAllowed measures the check's push probe for one repo: a
// local bare remote (access(2) on two directories) and an HTTP remote (one
// receive-pack discovery through git http-backend).
//
//	go test -run '^$' -bench PushAllowed ./repos
func BenchmarkPushAllowed(b *testing.B) {
	ctx := context.Background()
	tr := &train{root: b.TempDir(), remotes: map[string]*remoteRepo{}}
	tr.remotes["repo01"] = newRemote(b, tr.root, "repo01", "feat: init")
	work := filepath.Join(tr.root, ".release")
	b.Run("file", func(b *testing.B) {
		set := New(tr.spec(), work)
		for b.Loop() {
			if err := set.pushAllowed(ctx, "repo01", "v1.0.0"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("http", func(b *testing.B) {
		srv := gitserver.Start(b, tr.root, "tok")
		spec := tr.spec()
		spec.Repos["repo01"] = stages.Repo{URL: srv.URL + "/repo01.git", Branch: "main", TokenEnv: "GIT_TOKEN"}
		set := New(spec, work, WithGetenv(func(string) string { return "tok" }))
		for b.Loop() {
			if err := set.pushAllowed(ctx, "repo01", "v1.0.0"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
