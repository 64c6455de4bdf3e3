package repos

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Hostile input to the repos package: versions, branch names and commit
// messages carrying shell metacharacters, newlines and leading dashes. The
// package talks to git through go-git, so none of it can reach a shell;
// these tests hold it to that with a canary file that any evaluation of the
// input would create.

// canary returns a path that must not exist when the test ends, and shell
// snippets that would create it if anything ran them.
func canary(t *testing.T) (path string, snippets []string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "canary")
	t.Cleanup(func() {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the canary %s exists (%v): something ran hostile input", path, err)
		}
	})
	return path, []string{"$(touch " + path + ")", "`touch " + path + "`", "; touch " + path, "| touch " + path, "&& touch " + path, "\ntouch " + path}
}

func TestHostileVersionsRefused(t *testing.T) {
	canary(t)
	ctx := context.Background()
	tr := newTrain(t, 2)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(tr.spec(), work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr.pushes(t)
	for _, v := range hostileVersions {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			set := New(tr.spec(), work)
			want := "parse version " + strconv.Quote(v) + ": "
			_, err := ParseVersion(v, "v")
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("ParseVersion: %v, want an error starting %q", err, want)
			}
			if _, err := set.GivenVersion(ctx, v, pinned); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("GivenVersion: %v, want %q", err, want)
			}
			results, err := set.Tag(ctx, v, pinned, TagOptions{})
			if err == nil || !strings.Contains(err.Error(), want) || len(results) != 0 {
				t.Errorf("Tag: %v, %v; want %q and no results", results, err, want)
			}
			if _, err := set.Changelogs(ctx, v, pinned); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Changelogs: %v, want %q", err, want)
			}
		})
	}
	if got := tr.pushes(t); len(got) != 0 {
		t.Errorf("pushes after refused versions: %v", got)
	}
	for _, name := range tr.names {
		if tags := lsTags(t, tr.remotes[name].Bare); len(tags) != 0 {
			t.Errorf("repo %s has tags %v after refused versions", name, tags)
		}
	}
}

// Branch names that git allows may carry shell syntax; they are ref names
// to go-git and nothing else. Names git's porcelain refuses, a leading "-"
// among them, are refused by the pipeline loader (pipeline.TestBranchNames);
// even set on a Set directly, and present on the remote through update-ref,
// they only name a ref.
func TestHostileBranchNames(t *testing.T) {
	path, _ := canary(t)
	ctx := context.Background()
	root := t.TempDir()
	r := newRemote(t, root, "api", "feat: init")
	branches := []string{
		"$(touch${IFS}" + path + ")",
		"`touch${IFS}" + path + "`",
		"x;touch${IFS}" + path,
		"x|touch${IFS}" + path,
		"--upload-pack=touch${IFS}" + path,
		"-f",
	}
	want := map[string]string{}
	for i, b := range branches {
		sha := r.commit("fix: on branch " + strconv.Itoa(i))
		// update-ref, unlike git branch, takes a name starting with "-".
		gitCLI(t, r.Work, "update-ref", "refs/heads/"+b, sha)
		gitCLI(t, r.Work, "push", "-q", "origin", "refs/heads/"+b+":refs/heads/"+b)
		want[b] = sha
	}
	for i, b := range branches {
		t.Run(strconv.Quote(b), func(t *testing.T) {
			spec := specOf(root, map[string]*remoteRepo{"api": r})
			repo := spec.Repos["api"]
			repo.Branch = b
			spec.Repos["api"] = repo
			set := New(spec, filepath.Join(root, ".release"))
			heads, err := set.Heads(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if heads["api"] != want[b] {
				t.Errorf("head of %q = %s, want %s", b, heads["api"], want[b])
			}
			// The pinned commit is checked against that branch, then tagged.
			if _, err := set.Tag(ctx, "1.0."+strconv.Itoa(i), heads, TagOptions{}); err != nil {
				t.Errorf("tag on branch %q: %v", b, err)
			}
		})
	}
}

// Commit messages pass through changelogs, release notes and tag messages
// verbatim, and nothing runs them.
func TestHostileCommitMessages(t *testing.T) {
	_, snippets := canary(t)
	messages := []string{"chore: init", "tag v1.0.0"}
	for i, s := range snippets {
		messages = append(messages, []string{"feat: ", "fix: ", "perf(x): ", "", "feat(api)!: "}[i%5]+strings.TrimLeft(s, "\n")+" tail")
	}
	messages = append(messages,
		"--force",
		"-rf --upload-pack=x",
		"docs: <script>alert(1)</script> 'single' \"double\" \\ back",
		"refactor: body\n\n"+snippets[0]+"\nBREAKING CHANGE: "+snippets[1],
		"pin",
	)
	set, pinned, norm := history{"api": messages}.build(t)
	ctx := context.Background()
	cls, err := set.Changelogs(ctx, "1.1.0", pinned)
	if err != nil {
		t.Fatal(err)
	}
	notes := norm.Replace(Notes("v1.1.0", cls))
	for _, m := range messages[2 : len(messages)-1] {
		c := ParseConventional(m)
		if !strings.Contains(notes, c.Subject) {
			t.Errorf("subject %q not verbatim in the notes", c.Subject)
		}
		if c.BreakingMsg != "" && !strings.Contains(notes, c.BreakingMsg) {
			t.Errorf("breaking message %q not verbatim in the notes", c.BreakingMsg)
		}
	}
	if cls[0].Commits != len(messages)-3 {
		t.Errorf("changelog counts %d commits, want %d", cls[0].Commits, len(messages)-3)
	}
	results, err := set.Tag(ctx, "1.1.0", pinned, TagOptions{})
	if err != nil || results[0].Outcome != Pushed {
		t.Fatalf("tag: %v, %v", results, err)
	}
	t.Logf("notes:\n%s", notes)
}
