package repos

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/stages"
)

func TestOpenAndHeads(t *testing.T) {
	root := t.TempDir()
	api := newRemote(t, root, "api", "feat: one", "fix: two")
	web := newRemote(t, root, "web", "chore: init")
	// The pipeline file names one repo by a path relative to its directory
	// and the other by a file:// URL.
	spec := specOf(root, nil)
	spec.Repos = map[string]stages.Repo{
		"api": {URL: "api.git", Branch: "main"},
		"web": {URL: "file://" + web.Bare},
	}
	set := New(spec, filepath.Join(root, ".release"))
	ctx := context.Background()

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := set.Open(ctx, "api"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	heads, err := set.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"api": api.head(), "web": web.head()}
	if diff := cmp.Diff(want, heads); diff != "" {
		t.Errorf("Heads (-want +got):\n%s", diff)
	}
	// The mirror is bare and holds the branch.
	mirror := set.MirrorDir("api")
	if got := gitCLI(t, mirror, "rev-parse", "--is-bare-repository"); got != "true" {
		t.Errorf("mirror is bare = %s", got)
	}
	if got := gitCLI(t, mirror, "rev-parse", "refs/heads/main"); got != api.head() {
		t.Errorf("mirror main = %s, want %s", got, api.head())
	}

	// A new Set over the same work dir fetches into the existing mirror.
	c := api.commit("feat: three")
	api.push()
	heads, err = New(spec, filepath.Join(root, ".release")).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if heads["api"] != c {
		t.Errorf("api head after fetch = %s, want %s", heads["api"], c)
	}
}

func TestOpenUnknownRepo(t *testing.T) {
	set := New(&stages.Spec{}, t.TempDir())
	if _, err := set.Open(context.Background(), "nope"); err == nil || err.Error() != `unknown repo "nope"` {
		t.Errorf("Open unknown = %v", err)
	}
}

func TestReach(t *testing.T) {
	root := t.TempDir()
	newRemote(t, root, "api", "feat: one")
	newRemote(t, root, "empty")
	spec := specOf(root, nil)
	spec.Repos = map[string]stages.Repo{
		"api":     {URL: "api.git"},
		"empty":   {URL: "empty.git"},
		"missing": {URL: "nowhere.git"},
	}
	set := New(spec, t.TempDir())
	ctx := context.Background()
	if err := set.Reach(ctx, "api"); err != nil {
		t.Errorf("api: %v", err)
	}
	if err := set.Reach(ctx, "empty"); err == nil {
		t.Error("empty: no error")
	}
	if err := set.Reach(ctx, "missing"); err == nil || !strings.Contains(err.Error(), filepath.Join(root, "nowhere.git")) {
		t.Errorf("missing: %v", err)
	}
}

// The docker-build stage reads commits from mirrors while the git-tag stage
// of another node tags them: both through the same work directory.
func TestConcurrentReadersAndTag(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 3)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(tr.spec(), work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reader := New(tr.spec(), work)
	var wg sync.WaitGroup
	for range 3 {
		for _, name := range tr.names {
			wg.Go(func() {
				r, err := reader.Open(ctx, name)
				if err != nil {
					t.Error(err)
					return
				}
				c, err := r.CommitObject(plumbing.NewHash(pinned[name]))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := c.Tree(); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Go(func() {
		if _, err := New(tr.spec(), work).Tag(ctx, "1.0.0", pinned, TagOptions{}); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	for _, name := range tr.names {
		checkAnnotated(t, tr.remotes[name].Bare, "v1.0.0", pinned[name])
	}
}
