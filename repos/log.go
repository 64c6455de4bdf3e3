package repos

import (
	"context"
	"fmt"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
)

// Commit is one commit of a repo's log.
type Commit struct {
	SHA     string `json:"sha"`
	Subject string `json:"subject"`
}

// Log lists the commits of the named repo that are reachable from to and
// not from from (every commit up to to when from is ""), newest first along
// first parents: what a release at to has that one at from has not.
func (s *Set) Log(ctx context.Context, name, from, to string) ([]Commit, error) {
	head := plumbing.NewHash(to)
	r, err := s.openWith(ctx, name, head)
	if err != nil {
		return nil, err
	}
	var base plumbing.Hash
	if from != "" {
		base = plumbing.NewHash(from)
		if !hasCommit(r, base) {
			return nil, fmt.Errorf("find commit %s in repo %s: not on the remote", from, name)
		}
	}
	cs, err := commitsSince(r, head, base)
	if err != nil {
		return nil, fmt.Errorf("log of repo %s: %w", name, err)
	}
	out := make([]Commit, len(cs))
	for i, c := range cs {
		out[i] = Commit{SHA: c.Hash.String(), Subject: firstLine(c.Message)}
	}
	return out, nil
}

// Tagged returns the commit that version's release tag points at in each
// repo that has the tag, by repo name.
func (s *Set) Tagged(ctx context.Context, version string) (map[string]string, error) {
	v, err := ParseVersion(version, s.TagPrefix())
	if err != nil {
		return nil, err
	}
	tag := s.TagPrefix() + v.String()
	out := map[string]string{}
	var mu sync.Mutex
	err = s.each(ctx, s.Names(), func(ctx context.Context, name string) error {
		r, err := s.Open(ctx, name)
		if err != nil {
			return err
		}
		tags, err := releaseTags(r, s.TagPrefix())
		if err != nil {
			return fmt.Errorf("repo %s: %w", name, err)
		}
		for _, t := range tags {
			if t.Name == tag {
				mu.Lock()
				out[name] = t.Commit.String()
				mu.Unlock()
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
