package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
)

// NotesRequest asks for the release notes of a version.
type NotesRequest struct {
	// Version is a released version; "" is the next release: what it
	// would say, from the last release tag to the branch heads.
	Version string
	// Bump is the bump of the next release (Version ""); "" is the
	// file's version.bump.
	Bump string
}

// Notes are the release notes of one version, per repo.
type Notes struct {
	Version string `json:"version"`
	Tag     string `json:"tag"`
	// Upcoming says the version is not released yet: the notes are what
	// the next release would say, and Reason says why it gets Version.
	Upcoming bool   `json:"upcoming"`
	Reason   string `json:"reason,omitempty"`
	Markdown string `json:"-"`
	// Repos are the repos' changelogs (see Repos.Notes).
	Repos any `json:"repos"`
}

// Notes are the release notes of a version, the same that the
// github-release stage publishes. A released version's notes run, per
// repo, from the release tag before it to its own tag, or to the commit its
// record pinned when the repo has no tag yet; the next release's run to the
// branch heads.
func (e *Engine) Notes(ctx context.Context, req NotesRequest) (*Notes, error) {
	p := e.Pipeline
	if e.Repos == nil || len(p.Spec.Repos) == 0 {
		return nil, usagef("the pipeline has no repos: release notes are made from their commits")
	}
	prefix := p.Spec.Version.TagPrefix
	if req.Version == "" {
		heads, err := e.heads(ctx)
		if err != nil {
			return nil, err
		}
		v, err := e.NextVersion(ctx, req.Bump, "", heads)
		if errors.Is(err, ErrNothingToRelease) && v.Reason != "" {
			return nil, &RefusedError{Err: fmt.Errorf("%w: %s", err, v.Reason)}
		}
		if err != nil {
			return nil, err
		}
		rn, err := e.Repos.Notes(ctx, v.Version, heads)
		if err != nil {
			return nil, err
		}
		return &Notes{Version: v.Version, Tag: prefix + v.Version, Upcoming: true, Reason: v.Reason, Markdown: rn.Markdown, Repos: rn.Detail}, nil
	}
	v, err := parseVersion(req.Version, prefix)
	if err != nil {
		return nil, usagef("%v", err)
	}
	commits, err := e.releasedCommits(ctx, v.String())
	if err != nil {
		return nil, err
	}
	rn, err := e.Repos.Notes(ctx, v.String(), commits)
	if err != nil {
		return nil, err
	}
	return &Notes{Version: v.String(), Tag: prefix + v.String(), Markdown: rn.Markdown, Repos: rn.Detail}, nil
}

// releasedCommits are the commits of every repo a released version is
// made of: its tag, else what its record pinned. A version neither tagged
// nor recorded is unknown.
func (e *Engine) releasedCommits(ctx context.Context, version string) (map[string]string, error) {
	p := e.Pipeline
	tag := p.Spec.Version.TagPrefix + version
	tagged, err := e.Repos.Tagged(ctx, version)
	if err != nil {
		return nil, err
	}
	rel, err := e.recordedRelease(ctx, version)
	if err != nil {
		return nil, err
	}
	if len(tagged) == 0 && rel == nil {
		return nil, usagef("unknown version %s: no repo has the tag %s and no run of %s released it", version, tag, p.Spec.Name)
	}
	commits := map[string]string{}
	if rel != nil {
		maps.Copy(commits, rel.Commits)
	}
	maps.Copy(commits, tagged)
	var missing []string
	for _, name := range p.Spec.RepoNames() {
		if commits[name] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, refusedf("version %s: repos %s have neither the tag %s nor a commit recorded for it", version, strings.Join(missing, ", "), tag)
	}
	return commits, nil
}
