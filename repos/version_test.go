package repos

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// history builds repos from scripts. Each line of a repo's script is a
// commit message, "tag NAME" (annotated tag at the last commit) or "pin"
// (the pinned commit of the run is the last commit; later commits land on
// the branch after pinning).
type history map[string][]string

// build creates the repos and returns the Set, the pinned commits, and a
// replacer that turns every SHA into "<repo#n>" (n counting commits from 1),
// so golden files do not depend on hashes.
func (h history) build(t *testing.T) (*Set, map[string]string, *strings.Replacer) {
	t.Helper()
	root := t.TempDir()
	remotes := map[string]*remoteRepo{}
	pinned := map[string]string{}
	var names []string
	for name := range h {
		names = append(names, name)
	}
	slices.Sort(names)
	var pairs []string
	for _, name := range names {
		r := newRemote(t, root, name)
		remotes[name] = r
		n, last := 0, ""
		for _, line := range h[name] {
			switch {
			case line == "pin":
				pinned[name] = last
			case strings.HasPrefix(line, "tag "):
				gitCLI(t, r.Work, "tag", "-a", "-m", "release", strings.TrimPrefix(line, "tag "), last)
			default:
				n++
				last = r.commit(line)
				label := "<" + name + "#" + strconv.Itoa(n) + ">"
				pairs = append(pairs, last, label, last[:7], label)
			}
		}
		gitCLI(t, r.Work, "push", "-q", "--follow-tags", "origin", "main")
		gitCLI(t, r.Work, "push", "-q", "origin", "refs/tags/*")
	}
	set := New(specOf(root, remotes), filepath.Join(root, ".release"))
	return set, pinned, strings.NewReplacer(pairs...)
}

func TestNextVersionGolden(t *testing.T) {
	tests := []struct {
		name string
		bump string
		h    history
	}{
		{"auto-feat-minor", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "feat(auth): add login", "fix: typo"},
			"web": {"chore: init", "tag v1.2.0", "fix: button colour"},
		}},
		{"auto-fix-patch", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "fix: leak", "docs: readme"},
			"web": {"chore: init", "tag v1.2.0", "chore: deps"},
		}},
		{"auto-breaking-bang", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "feat: small"},
			"web": {"chore: init", "tag v1.2.0", "feat(ui)!: new layout"},
		}},
		{"auto-breaking-footer", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "refactor: config\n\nBREAKING CHANGE: keys renamed"},
		}},
		{"auto-zero-breaking-minor", "auto", history{
			"api": {"feat: init", "tag v0.3.1", "feat!: drop endpoint", "feat: more"},
		}},
		{"auto-zero-feat-patch", "auto", history{
			"api": {"feat: init", "tag v0.3.1", "feat: more", "fix: less"},
		}},
		{"auto-first-release", "auto", history{
			"api": {"fix: init"},
			"web": {"chore: init"},
		}},
		{"auto-nothing", "auto", history{
			"api": {"feat: init", "tag v1.0.0", "chore: deps", "ci: lint"},
		}},
		{"auto-pinned-before-feat", "auto", history{
			"api": {"feat: init", "tag v1.0.0", "fix: bug", "pin", "feat: after pinning"},
		}},
		{"auto-newest-over-repos", "auto", history{
			"api": {"feat: init", "tag v1.1.0", "tag v1.2.0", "fix: a"},
			"web": {"feat: init", "tag v1.1.0", "feat: missed 1.2.0"},
		}},
		{"auto-prerelease-base", "auto", history{
			"api": {"feat: init", "tag v1.9.0", "feat!: big", "tag v2.0.0-rc.1", "feat: more"},
		}},
		{"major", "major", history{
			"api": {"feat: init", "tag v1.2.3", "chore: x"},
		}},
		{"minor-ignores-other-prefixes", "minor", history{
			"api": {"feat: init", "tag v1.2.3", "tag release-9.0.0", "tag v10", "chore: x"},
		}},
		{"patch-of-prerelease", "patch", history{
			"api": {"feat: init", "tag v1.3.0-rc.2"},
		}},
		{"minor-no-tags", "minor", history{
			"api": {"chore: init"},
		}},
		// A squash commit's body lists changes of its own.
		{"auto-squash-body-feat", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "Merge the login work (#12)\n\n* docs: readme\n* feat(auth): add login\n* fix: typo"},
		}},
		// Release-As sets the version, over any bump; the highest wins.
		{"release-as-over-minor", "minor", history{
			"api": {"feat: init", "tag v1.2.0", "chore: cut 2.0\n\nRelease-As: 2.0.0", "fix: a"},
		}},
		{"release-as-auto-without-feat", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "chore: ship it\n\nRelease-As: v1.2.1"},
		}},
		{"release-as-highest-over-repos", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "chore: x\n\nRelease-As: 1.5.0", "feat!: big"},
			"web": {"feat: init", "tag v1.2.0", "chore: y\n\nrelease-as: 3.0.0-rc.1"},
		}},
		{"release-as-before-tag-not-read", "auto", history{
			"api": {"feat: init\n\nRelease-As: 5.0.0", "tag v1.2.0", "fix: a"},
		}},
		{"release-as-not-above-ignored", "auto", history{
			"api": {"feat: init", "tag v1.2.0", "fix: a\n\nRelease-As: 1.1.0"},
		}},
		{"release-as-not-a-version-ignored", "minor", history{
			"api": {"feat: init", "tag v1.2.0", "fix: a\n\nRelease-As: soon"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, pinned, norm := tt.h.build(t)
			next, err := set.NextVersion(context.Background(), tt.bump, pinned)
			if err != nil && !errors.Is(err, ErrNothingToRelease) {
				t.Fatal(err)
			}
			out := struct {
				Next  Next   `json:"next"`
				Error string `json:"error,omitempty"`
			}{Next: next}
			if err != nil {
				out.Error = err.Error()
			}
			b, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "next/"+tt.name+".json", []byte(norm.Replace(string(b))+"\n"))
		})
	}
}

func TestNextVersionBadBump(t *testing.T) {
	set := New(specOf(t.TempDir(), nil), t.TempDir())
	_, err := set.NextVersion(context.Background(), "huge", nil)
	if err == nil || err.Error() != `unknown bump "huge" (want major, minor, patch or auto)` {
		t.Errorf("err = %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{in: "1.4.0", want: "1.4.0"},
		{in: "v1.4.0", want: "1.4.0"},
		{in: "v2.0.0-rc.1", want: "2.0.0-rc.1"},
		{in: "1.4", err: `parse version "1.4": invalid semantic version`},
		{in: "vv1.0.0", err: `parse version "vv1.0.0": invalid characters in version`},
	} {
		v, err := ParseVersion(tt.in, "v")
		switch {
		case tt.err != "":
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseVersion(%q) err = %v, want %s", tt.in, err, tt.err)
			}
		case err != nil:
			t.Errorf("ParseVersion(%q): %v", tt.in, err)
		case v.String() != tt.want:
			t.Errorf("ParseVersion(%q) = %s, want %s", tt.in, v, tt.want)
		}
	}
}

func TestGivenVersion(t *testing.T) {
	h := history{"api": {"feat: init", "tag v1.2.0", "fix: x"}}
	set, pinned, _ := h.build(t)
	for _, tt := range []struct{ in, version, reason string }{
		{"v2.0.0-rc.1", "2.0.0-rc.1", "given by hand, since v1.2.0"},
		{"1.2.0", "1.2.0", "given by hand, not above the newest release tag v1.2.0"},
	} {
		next, err := set.GivenVersion(context.Background(), tt.in, pinned)
		if err != nil {
			t.Fatal(err)
		}
		got := []string{next.Version, next.Tag, next.Requested, next.Bump, next.Reason}
		want := []string{tt.version, "v" + tt.version, "version", "none", tt.reason}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GivenVersion(%s) (-want +got):\n%s", tt.in, diff)
		}
	}
	if _, err := set.GivenVersion(context.Background(), "2", pinned); err == nil {
		t.Error("GivenVersion(2) accepted")
	}
}
