package repos

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
