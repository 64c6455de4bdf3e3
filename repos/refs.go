package repos

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Ref is a ref given for one repo (--ref REPO=REF), resolved in its
// mirror.
type Ref struct {
	Repo   string
	Ref    string // as given: a branch, a tag or a commit
	Commit string
	// Branch says the ref names a branch of the remote, which a tag
	// pushed at Commit can be checked against.
	Branch bool
}

// hexRef is what a commit given by hand looks like: 7 to 40 hex digits.
var hexRef = regexp.MustCompile(`^[0-9a-f]{7,40}$`)

// Resolve reads ref in the named repo, fetched from its remote: a branch
// first, then a tag, then a commit SHA or an unambiguous prefix of one. The
// error names the repo and the ref.
func (s *Set) Resolve(ctx context.Context, repo, ref string) (Ref, error) {
	out := Ref{Repo: repo, Ref: ref}
	if ref == "" {
		return out, fmt.Errorf("repo %s: an empty ref", repo)
	}
	r, err := s.Open(ctx, repo)
	if err != nil {
		return out, err
	}
	if b, err := r.Reference(plumbing.NewBranchReferenceName(ref), true); err == nil {
		out.Commit, out.Branch = b.Hash().String(), true
		return out, nil
	}
	if t, err := r.Reference(plumbing.NewTagReferenceName(ref), true); err == nil {
		c, err := peel(r, t.Hash())
		if err != nil {
			return out, fmt.Errorf("repo %s: resolve tag %s: %w", repo, ref, err)
		}
		out.Commit = c.String()
		return out, nil
	}
	if hexRef.MatchString(ref) {
		c, err := commitByPrefix(r, ref)
		if err != nil {
			return out, fmt.Errorf("repo %s: ref %s: %w", repo, ref, err)
		}
		out.Commit = c.String()
		return out, nil
	}
	return out, fmt.Errorf("repo %s has no branch, tag or commit %q", repo, ref)
}

// commitByPrefix finds the one commit whose SHA starts with prefix.
func commitByPrefix(r *git.Repository, prefix string) (plumbing.Hash, error) {
	if len(prefix) == 40 {
		h := plumbing.NewHash(prefix)
		if _, err := r.CommitObject(h); err != nil {
			return plumbing.ZeroHash, errors.New("no such commit on any branch or tag of the remote")
		}
		return h, nil
	}
	iter, err := r.CommitObjects()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("list commits: %w", err)
	}
	var found []plumbing.Hash
	err = iter.ForEach(func(c *object.Commit) error {
		if h := c.Hash.String(); h[:len(prefix)] == prefix {
			found = append(found, c.Hash)
		}
		return nil
	})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("list commits: %w", err)
	}
	switch len(found) {
	case 0:
		return plumbing.ZeroHash, errors.New("no such commit on any branch or tag of the remote")
	case 1:
		return found[0], nil
	}
	return plumbing.ZeroHash, fmt.Errorf("ambiguous: %d commits start with it", len(found))
}

// Base is the newest release whose tag in the named repo is reachable from
// commit: the release a branch descends from, and the one a hotfix from it
// patches. "" when no release tag is.
func (s *Set) Base(ctx context.Context, repo, commit string) (string, error) {
	r, err := s.openWith(ctx, repo, plumbing.NewHash(commit))
	if err != nil {
		return "", err
	}
	tags, err := releaseTags(r, s.TagPrefix())
	if err != nil {
		return "", fmt.Errorf("repo %s: %w", repo, err)
	}
	if len(tags) == 0 {
		return "", nil
	}
	ancestors, err := commitsSince(r, plumbing.NewHash(commit), plumbing.ZeroHash)
	if err != nil {
		return "", fmt.Errorf("repo %s: %w", repo, err)
	}
	reach := make(map[plumbing.Hash]bool, len(ancestors))
	for _, c := range ancestors {
		reach[c.Hash] = true
	}
	for i := len(tags) - 1; i >= 0; i-- {
		if tags[i].Version.Prerelease() == "" && reach[tags[i].Commit] {
			return tags[i].Version.String(), nil
		}
	}
	return "", nil
}

// Versions are the release versions tagged in any repo, oldest first.
func (s *Set) Versions(ctx context.Context) ([]string, error) {
	states, err := s.states(ctx, nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var all []releaseTag
	for _, st := range states {
		for _, t := range st.tags {
			if !seen[t.Version.String()] {
				seen[t.Version.String()] = true
				all = append(all, t)
			}
		}
	}
	slices.SortFunc(all, func(a, b releaseTag) int { return a.Version.Compare(b.Version) })
	out := make([]string, len(all))
	for i, t := range all {
		out[i] = t.Version.String()
	}
	return out, nil
}

// Gone says whether ref of repo names a branch its remote no longer has:
// the remote answered, and has no branch or tag of that name, and ref is
// not a commit it holds. A remote that cannot be fetched is an error,
// never gone.
func (s *Set) Gone(ctx context.Context, repo, ref string) (bool, error) {
	r, err := s.Open(ctx, repo)
	if err != nil {
		return false, err
	}
	if _, err := r.Reference(plumbing.NewBranchReferenceName(ref), true); err == nil {
		return false, nil
	}
	if _, err := r.Reference(plumbing.NewTagReferenceName(ref), true); err == nil {
		return false, nil
	}
	if hexRef.MatchString(ref) {
		if _, err := commitByPrefix(r, ref); err == nil {
			return false, nil
		}
	}
	return true, nil
}
