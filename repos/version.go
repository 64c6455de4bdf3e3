package repos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrNothingToRelease is returned by NextVersion with bump "auto" when no
// repo has a feat, a fix or a breaking change since its last release tag.
var ErrNothingToRelease = errors.New("nothing to release")

// Next is the version a release would get, and why.
type Next struct {
	Version     string `json:"version"`               // "1.3.0", without the tag prefix
	Tag         string `json:"tag"`                   // "v1.3.0"
	Previous    string `json:"previous,omitempty"`    // "1.2.0"; "" when no repo has a release tag
	PreviousTag string `json:"previousTag,omitempty"` // "v1.2.0"
	Requested   string `json:"requested"`             // major, minor, patch or auto
	Bump        string `json:"bump"`                  // what was applied: major, minor, patch or none
	Reason      string `json:"reason"`                // one line for people
	// Repo, Commit and Subject name the commit that drove an auto bump.
	Repo    string        `json:"repo,omitempty"`
	Commit  string        `json:"commit,omitempty"`
	Subject string        `json:"subject,omitempty"`
	Repos   []RepoChanges `json:"repos"`
}

// RepoChanges is what one repo holds since its last release tag.
type RepoChanges struct {
	Repo    string `json:"repo"`
	Since   string `json:"since,omitempty"` // the repo's last release tag
	Commit  string `json:"commit"`          // the pinned commit
	Commits int    `json:"commits"`         // commits since the tag up to the pinned commit
	Bump    string `json:"bump"`            // the largest bump its commits ask for
}

// ParseVersion reads a release version given by hand, with or without the
// tag prefix: "1.4.0", "v1.4.0", "2.0.0-rc.1". It must be strict semver;
// pre-releases and build metadata are allowed.
func ParseVersion(s, prefix string) (*semver.Version, error) {
	v, err := semver.StrictNewVersion(strings.TrimPrefix(s, prefix))
	if err != nil {
		return nil, fmt.Errorf("parse version %q: %w", s, err)
	}
	return v, nil
}

// TagName is the release tag of a version: the prefix and the version, with
// the prefix not doubled when the version already carries it.
func (s *Set) TagName(version string) string {
	return s.TagPrefix() + strings.TrimPrefix(version, s.TagPrefix())
}

// releaseTag is a tag that names a release: the prefix and a semver version.
type releaseTag struct {
	Name    string
	Version *semver.Version
	Commit  plumbing.Hash
}

// releaseTags returns the repo's release tags, oldest version first.
func releaseTags(r *git.Repository, prefix string) ([]releaseTag, error) {
	iter, err := r.Tags()
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	var tags []releaseTag
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().Short()
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return nil
		}
		v, err := semver.StrictNewVersion(rest)
		if err != nil {
			return nil
		}
		c, err := peel(r, ref.Hash())
		if err != nil {
			return fmt.Errorf("resolve tag %s: %w", name, err)
		}
		tags = append(tags, releaseTag{Name: name, Version: v, Commit: c})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(tags, func(a, b releaseTag) int { return a.Version.Compare(b.Version) })
	return tags, nil
}

// peel follows annotated tags down to the commit they point at.
func peel(r *git.Repository, h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		t, err := r.TagObject(h)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return h, nil
		}
		if err != nil {
			return plumbing.ZeroHash, err
		}
		h = t.Target
	}
	return plumbing.ZeroHash, errors.New("tag chain too long")
}

// repoState is what version and changelog computations need of one repo.
type repoState struct {
	name string
	repo *git.Repository
	tags []releaseTag
	head plumbing.Hash // the pinned commit
}

// states opens every repo and resolves its pinned commit: commits[name],
// else the branch head of the mirror.
func (s *Set) states(ctx context.Context, commits map[string]string) ([]*repoState, error) {
	names := s.Names()
	out := make([]*repoState, len(names))
	var mu sync.Mutex
	err := s.each(ctx, names, func(ctx context.Context, name string) error {
		r, err := s.Open(ctx, name)
		if err != nil {
			return err
		}
		st := &repoState{name: name, repo: r}
		if st.tags, err = releaseTags(r, s.TagPrefix()); err != nil {
			return fmt.Errorf("repo %s: %w", name, err)
		}
		if c, ok := commits[name]; ok {
			st.head = plumbing.NewHash(c)
			if _, err := r.CommitObject(st.head); err != nil {
				return fmt.Errorf("find pinned commit %s in repo %s: %w", c, name, err)
			}
		} else {
			ref, err := r.Reference(plumbing.NewBranchReferenceName(s.branch(name)), true)
			if err != nil {
				return fmt.Errorf("resolve branch %s of repo %s: %w", s.branch(name), name, err)
			}
			st.head = ref.Hash()
		}
		mu.Lock()
		out[slices.Index(names, name)] = st
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lastBefore is the newest release tag of the repo whose version is lower
// than v, or the newest of all when v is nil.
func (st *repoState) lastBefore(v *semver.Version) (releaseTag, bool) {
	for i := len(st.tags) - 1; i >= 0; i-- {
		if v == nil || st.tags[i].Version.LessThan(v) {
			return st.tags[i], true
		}
	}
	return releaseTag{}, false
}

// commitsSince returns the commits reachable from head and not from base
// (all of them when base is zero), newest first along first parents.
func commitsSince(r *git.Repository, head, base plumbing.Hash) ([]*object.Commit, error) {
	seen := map[plumbing.Hash]bool{}
	if !base.IsZero() {
		bc, err := r.CommitObject(base)
		if err != nil {
			return nil, fmt.Errorf("read commit %s: %w", base, err)
		}
		err = object.NewCommitPreorderIter(bc, nil, nil).ForEach(func(c *object.Commit) error {
			seen[c.Hash] = true
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walk history of %s: %w", base, err)
		}
	}
	hc, err := r.CommitObject(head)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", head, err)
	}
	var out []*object.Commit
	err = object.NewCommitPreorderIter(hc, seen, nil).ForEach(func(c *object.Commit) error {
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk history of %s: %w", head, err)
	}
	return out, nil
}

// NextVersion computes the release version that follows the newest release
// tag over all repos. bump is major, minor, patch, or auto; "" means the
// file's version.bump (minor by default). commits are the pinned commits by
// repo; a repo missing from it is read at its branch head.
//
// auto reads the Conventional Commits in every repo since that repo's last
// release tag up to the pinned commit, and the changes a squash commit lists
// in its body (ParseCommit): a breaking change ("!" or a BREAKING CHANGE
// footer) is major, feat minor, fix patch, the largest wins. Before
// 1.0.0 everything moves one place down (breaking → minor, feat and fix →
// patch), as Cargo reads 0.x versions. With nothing to release, auto returns
// Next with Bump "none" and ErrNothingToRelease.
//
// The bump of a pre-release finishes it rather than skipping a version:
// patch of 1.3.0-rc.1 is 1.3.0, minor of 1.3.0-rc.1 is 1.3.0, major of
// 2.0.0-rc.1 is 2.0.0. Without any release tag, the base is 0.0.0 and an
// auto release is at least 0.1.0.
//
// A "Release-As: X.Y.Z" footer in a commit since the last release tag sets
// the version, as release-please reads it, whatever the bump: the highest
// of them wins, and the reason names its commit. One that is not above the
// newest release tag is ignored, and the reason says so.
func (s *Set) NextVersion(ctx context.Context, bump string, commits map[string]string) (Next, error) {
	if bump == "" {
		bump = s.spec.Version.Bump
	}
	if bump == "" {
		bump = "minor"
	}
	var want Level
	switch bump {
	case "major":
		want = Major
	case "minor":
		want = Minor
	case "patch":
		want = Patch
	case "auto":
	default:
		return Next{}, fmt.Errorf("unknown bump %q (want major, minor, patch or auto)", bump)
	}
	states, err := s.states(ctx, commits)
	if err != nil {
		return Next{}, err
	}
	return nextVersion(states, s.TagPrefix(), bump, want)
}

func nextVersion(states []*repoState, prefix, bump string, want Level) (Next, error) {
	next := Next{Requested: bump, Repos: []RepoChanges{}}
	var prev *semver.Version
	for _, st := range states {
		if t, ok := st.lastBefore(nil); ok && (prev == nil || t.Version.GreaterThan(prev)) {
			prev = t.Version
		}
	}
	if prev != nil {
		next.Previous = prev.String()
		next.PreviousTag = prefix + prev.String()
	}

	var driver struct {
		level  Level
		repo   string
		commit *object.Commit
		conv   Conventional
	}
	// releaseAs is the highest version a Release-As footer asks for.
	var releaseAs struct {
		v      *semver.Version
		repo   string
		commit *object.Commit
		bad    string // the first Release-As that names no version
	}
	for _, st := range states {
		rc := RepoChanges{Repo: st.name, Commit: st.head.String()}
		var base plumbing.Hash
		if t, ok := st.lastBefore(nil); ok {
			rc.Since, base = t.Name, t.Commit
		}
		cs, err := commitsSince(st.repo, st.head, base)
		if err != nil {
			return Next{}, fmt.Errorf("repo %s: %w", st.name, err)
		}
		rc.Commits = len(cs)
		var lvl Level
		for _, c := range cs {
			for _, conv := range ParseCommit(c.Message) {
				l := conv.Level()
				if l > lvl {
					lvl = l
				}
				if l > driver.level {
					driver.level, driver.repo, driver.commit, driver.conv = l, st.name, c, conv
				}
			}
			if ra := ReleaseAs(c.Message); ra != "" {
				v, err := ParseVersion(ra, prefix)
				switch {
				case err != nil && releaseAs.bad == "":
					releaseAs.bad = fmt.Sprintf("; Release-As: %s in %s %s is not a version, so it is ignored", ra, st.name, c.Hash.String()[:7])
				case err == nil && (releaseAs.v == nil || v.GreaterThan(releaseAs.v)):
					releaseAs.v, releaseAs.repo, releaseAs.commit = v, st.name, c
				}
			}
		}
		rc.Bump = lvl.String()
		next.Repos = append(next.Repos, rc)
	}

	base := prev
	if base == nil {
		base = semver.New(0, 0, 0, "", "")
	}
	since := "with no release tag yet"
	if prev != nil {
		since = "since " + next.PreviousTag
	}

	ignored := releaseAs.bad
	if ra := releaseAs.v; ra != nil {
		what := fmt.Sprintf("Release-As: %s in %s %s %q", ra, releaseAs.repo, releaseAs.commit.Hash.String()[:7], firstLine(releaseAs.commit.Message))
		if prev == nil || ra.GreaterThan(prev) {
			next.Version, next.Tag, next.Bump = ra.String(), prefix+ra.String(), levelBetween(base, ra).String()
			next.Repo, next.Commit, next.Subject = releaseAs.repo, releaseAs.commit.Hash.String(), firstLine(releaseAs.commit.Message)
			next.Reason = fmt.Sprintf("%s %s, over the %s bump", what, since, bump)
			return next, nil
		}
		ignored += fmt.Sprintf("; %s is not above %s, so it is ignored", what, next.PreviousTag)
	}

	if bump != "auto" {
		v := increment(base, want)
		next.Version, next.Tag, next.Bump = v.String(), prefix+v.String(), want.String()
		next.Reason = fmt.Sprintf("%s bump requested, %s%s", want, since, ignored)
		return next, nil
	}

	if driver.level == None {
		next.Bump = None.String()
		next.Reason = fmt.Sprintf("no feat, fix or breaking change in any repo %s%s", since, ignored)
		return next, ErrNothingToRelease
	}
	apply := driver.level
	note := ""
	if base.Major() == 0 && apply > Patch {
		apply--
		note = " (0.x: one place down)"
	}
	v := increment(base, apply)
	if prev == nil && v.LessThan(semver.New(0, 1, 0, "", "")) {
		v = *semver.New(0, 1, 0, "", "")
		apply = Minor
		note = " (first release)"
	}
	next.Version, next.Tag, next.Bump = v.String(), prefix+v.String(), apply.String()
	next.Repo, next.Commit, next.Subject = driver.repo, driver.commit.Hash.String(), firstLine(driver.commit.Message)
	kind := driver.conv.Type
	if driver.conv.Breaking {
		kind = "breaking change"
	}
	if hc := ParseConventional(next.Subject); hc.Type != driver.conv.Type || hc.Scope != driver.conv.Scope || hc.Subject != driver.conv.Subject {
		// A change the commit's body lists: say which.
		kind += fmt.Sprintf(" (%q)", driver.conv.Header())
	}
	next.Reason = fmt.Sprintf("%s in %s %s %q %s → %s%s%s",
		kind, driver.repo, driver.commit.Hash.String()[:7], next.Subject, since, apply, note, ignored)
	return next, nil
}

// levelBetween is the place in which v differs from base: the bump that
// names the step from one to the other.
func levelBetween(base, v *semver.Version) Level {
	switch {
	case v.Major() != base.Major():
		return Major
	case v.Minor() != base.Minor():
		return Minor
	}
	return Patch
}

// increment bumps v by l, finishing a pre-release instead of skipping past
// it (see NextVersion).
func increment(v *semver.Version, l Level) semver.Version {
	pre := v.Prerelease() != ""
	major, minor, patch := v.Major(), v.Minor(), v.Patch()
	switch l {
	case Major:
		if !(pre && minor == 0 && patch == 0) {
			major, minor, patch = major+1, 0, 0
		}
	case Minor:
		if !(pre && patch == 0) {
			minor, patch = minor+1, 0
		}
	case Patch:
		if !pre {
			patch++
		}
	}
	return *semver.New(major, minor, patch, "", "")
}

func firstLine(msg string) string {
	line, _, _ := strings.Cut(strings.TrimLeft(msg, "\n"), "\n")
	return strings.TrimSpace(line)
}

// GivenVersion describes a version set by hand (`--version V`) in the shape
// NextVersion uses: Requested "version", Bump "none", and Previous the
// newest release tag over all repos. A version that is not above it is
// allowed (re-tagging the current release adopts its tags) and the Reason
// says so.
func (s *Set) GivenVersion(ctx context.Context, version string, commits map[string]string) (Next, error) {
	prefix := s.TagPrefix()
	v, err := ParseVersion(version, prefix)
	if err != nil {
		return Next{}, err
	}
	states, err := s.states(ctx, commits)
	if err != nil {
		return Next{}, err
	}
	next, err := nextVersion(states, prefix, "minor", Minor)
	if err != nil {
		return Next{}, err
	}
	next.Version, next.Tag, next.Requested, next.Bump = v.String(), prefix+v.String(), "version", None.String()
	next.Repo, next.Commit, next.Subject = "", "", ""
	switch prev := next.Previous; {
	case prev == "":
		next.Reason = "given by hand, with no release tag yet"
	case semver.MustParse(prev).LessThan(v):
		next.Reason = "given by hand, since " + next.PreviousTag
	default:
		next.Reason = "given by hand, not above the newest release tag " + next.PreviousTag
	}
	return next, nil
}
