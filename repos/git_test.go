package repos

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sweepboard/release/stages"
)

// gitEnv makes the git CLI in tests independent of the user's configuration
// and gives commits a fixed author and date, so SHAs are reproducible.
var gitEnv = []string{
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_GLOBAL=/dev/null",
	"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
	"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
	"GIT_AUTHOR_DATE=2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z",
}

// git runs the git CLI in dir and returns its trimmed stdout.
func gitCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), gitEnv...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// remoteRepo is a bare repo on disk with a work tree to commit from.
type remoteRepo struct {
	t    testing.TB
	Bare string
	Work string
}

// newRemote creates root/NAME.git (bare, branch main) and a work clone of
// it, and commits the given subjects in order.
func newRemote(t testing.TB, root, name string, subjects ...string) *remoteRepo {
	t.Helper()
	r := &remoteRepo{t: t, Bare: filepath.Join(root, name+".git"), Work: filepath.Join(root, "work", name)}
	gitCLI(t, root, "init", "-q", "--bare", "-b", "main", r.Bare)
	gitCLI(t, root, "init", "-q", "-b", "main", r.Work)
	gitCLI(t, r.Work, "remote", "add", "origin", r.Bare)
	for _, s := range subjects {
		r.commit(s)
	}
	if len(subjects) > 0 {
		r.push()
	}
	return r
}

// commit makes an empty commit with the given message and returns its SHA.
func (r *remoteRepo) commit(msg string) string {
	gitCLI(r.t, r.Work, "commit", "-q", "--allow-empty", "-m", msg)
	return gitCLI(r.t, r.Work, "rev-parse", "HEAD")
}

func (r *remoteRepo) push() { gitCLI(r.t, r.Work, "push", "-q", "origin", "main") }

func (r *remoteRepo) head() string { return gitCLI(r.t, r.Bare, "rev-parse", "refs/heads/main") }

// tag creates an annotated tag at rev in the work tree and pushes it.
func (r *remoteRepo) tag(name, rev string) {
	gitCLI(r.t, r.Work, "tag", "-a", "-m", name, name, rev)
	gitCLI(r.t, r.Work, "push", "-q", "origin", "refs/tags/"+name)
}

// specOf is a pipeline spec over the given bare repos, by name.
func specOf(dir string, repos map[string]*remoteRepo) *stages.Spec {
	spec := &stages.Spec{Name: "test", Dir: dir, Version: stages.VersionPolicy{TagPrefix: "v", Bump: "minor"}, Repos: map[string]stages.Repo{}}
	for name, r := range repos {
		spec.Repos[name] = stages.Repo{URL: r.Bare, Branch: "main"}
	}
	return spec
}
