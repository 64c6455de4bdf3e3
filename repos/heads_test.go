package repos

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHeadsEachReportsEveryRepo: each repo's head is reported once, as it
// is fetched, with what Heads returns.
func TestHeadsEachReportsEveryRepo(t *testing.T) {
	root := t.TempDir()
	repos := map[string]*remoteRepo{
		"api":  newRemote(t, root, "api", "feat: one"),
		"auth": newRemote(t, root, "auth", "fix: two"),
		"web":  newRemote(t, root, "web", "chore: init"),
	}
	set := New(specOf(root, repos), filepath.Join(root, ".release"))
	var got []string
	heads, err := set.HeadsEach(context.Background(), func(repo, head string, took time.Duration) {
		if took <= 0 {
			t.Errorf("%s fetched in %v", repo, took)
		}
		got = append(got, repo+" "+head)
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for name, r := range repos {
		want = append(want, name+" "+r.head())
		if heads[name] != r.head() {
			t.Errorf("heads[%s] = %s, want %s", name, heads[name], r.head())
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reported (-want +got):\n%s", diff)
	}
}
