package repos

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestResolveAndBase: a release branch cut at 1.4.0 while main went on to
// 1.5.0 resolves by branch, tag or commit; it descends from 1.4.0, main
// from 1.5.0; a bad ref names the repo and the ref.
func TestResolveAndBase(t *testing.T) {
	root := t.TempDir()
	api := newRemote(t, root, "api", "feat: init")
	v140 := api.head()
	api.tag("v1.4.0", v140)
	gitCLI(t, api.Work, "branch", "release/1.4", v140)
	api.commit("feat: on main")
	api.push()
	v150 := api.head()
	api.tag("v1.5.0", v150)
	gitCLI(t, api.Work, "checkout", "-q", "release/1.4")
	fix := api.commit("fix: the hotfix")
	gitCLI(t, api.Work, "push", "-q", "origin", "release/1.4")
	// A pre-release on the branch is no release to patch.
	api.tag("v1.4.1-rc.1", fix)

	set := New(specOf(root, map[string]*remoteRepo{"api": api}), filepath.Join(root, ".release"))
	ctx := context.Background()
	for _, tc := range []struct {
		ref    string
		want   Ref
		base   string
		errSub string
	}{
		{ref: "release/1.4", want: Ref{Repo: "api", Ref: "release/1.4", Commit: fix, Branch: true}, base: "1.4.0"},
		{ref: "main", want: Ref{Repo: "api", Ref: "main", Commit: v150, Branch: true}, base: "1.5.0"},
		{ref: "v1.4.0", want: Ref{Repo: "api", Ref: "v1.4.0", Commit: v140}, base: "1.4.0"},
		{ref: fix[:9], want: Ref{Repo: "api", Ref: fix[:9], Commit: fix}, base: "1.4.0"},
		{ref: fix, want: Ref{Repo: "api", Ref: fix, Commit: fix}, base: "1.4.0"},
		{ref: "feature/none", errSub: `repo api has no branch, tag or commit "feature/none"`},
		{ref: "0000000000", errSub: "repo api: ref 0000000000: no such commit"},
	} {
		t.Run(strings.ReplaceAll(tc.ref, "/", "_"), func(t *testing.T) {
			got, err := set.Resolve(ctx, "api", tc.ref)
			if tc.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("Resolve %s: %v, want an error with %q", tc.ref, err, tc.errSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Resolve %s (-want +got):\n%s", tc.ref, diff)
			}
			base, err := set.Base(ctx, "api", got.Commit)
			if err != nil || base != tc.base {
				t.Errorf("Base of %s: %q, %v; want %s", tc.ref, base, err, tc.base)
			}
		})
	}
	vs, err := set.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"1.4.0", "1.4.1-rc.1", "1.5.0"}, vs); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	if _, err := set.Resolve(ctx, "nope", "main"); err == nil || !strings.Contains(err.Error(), `unknown repo "nope"`) {
		t.Errorf("Resolve in an unknown repo: %v", err)
	}
}
