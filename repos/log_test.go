package repos

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLog: the commits one release has and another has not, in both
// directions, from a real repo.
func TestLog(t *testing.T) {
	root := t.TempDir()
	r := newRemote(t, root, "api")
	c1 := r.commit("feat: init")
	c2 := r.commit("fix: a\n\nwith a body")
	c3 := r.commit("feat(auth): login")
	r.push()
	set := New(specOf(root, map[string]*remoteRepo{"api": r}), filepath.Join(root, ".release"))
	tests := []struct {
		name     string
		from, to string
		want     []string
		err      string
	}{
		{name: "forwards", from: c1, to: c3, want: []string{c3[:7] + " feat(auth): login", c2[:7] + " fix: a"}},
		{name: "backwards is empty", from: c3, to: c1},
		{name: "same commit", from: c2, to: c2},
		{name: "from the first commit", to: c2, want: []string{c2[:7] + " fix: a", c1[:7] + " feat: init"}},
		{name: "unknown commit", from: strings.Repeat("a", 40), to: c3, err: "find commit " + strings.Repeat("a", 40) + " in repo api: not on the remote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, err := set.Log(context.Background(), "api", tt.from, tt.to)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range log {
				got = append(got, c.SHA[:7]+" "+c.Subject)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("log (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTagged: the repos that have a version's tag, at its commit.
func TestTagged(t *testing.T) {
	root := t.TempDir()
	api := newRemote(t, root, "api", "feat: init")
	web := newRemote(t, root, "web", "feat: init")
	api.tag("v1.0.0", "HEAD")
	web.commit("fix: later")
	web.push()
	set := New(specOf(root, map[string]*remoteRepo{"api": api, "web": web}), filepath.Join(root, ".release"))
	got, err := set.Tagged(context.Background(), "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"api": api.head()}, got); diff != "" {
		t.Errorf("tagged (-want +got):\n%s", diff)
	}
	if _, err := set.Tagged(context.Background(), "one"); err == nil {
		t.Error("Tagged(one) accepted")
	}
}
