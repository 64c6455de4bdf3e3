package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/repos"
)

// versionChoice is the version a run releases and why.
type versionChoice struct {
	Version string
	Reason  string
	Next    *repos.Next // when it came from the repos
}

// resolveVersion picks the version of a new run: the one given with
// --version, or the newest release bumped. With repos, the newest release
// tag over all repos and their conventional commits decide; a pipeline
// without repos bumps the newest version recorded in the state store.
// commits are the pinned commits, or nil to use the branch heads.
func resolveVersion(ctx context.Context, f *Factory, p *pipeline.Pipeline, st pipeline.Store, bump, explicit string, commits map[string]string) (versionChoice, error) {
	prefix := p.Spec.Version.TagPrefix
	if explicit != "" {
		v, err := repos.ParseVersion(explicit, prefix)
		if err != nil {
			return versionChoice{}, usageErrorf("--version: %v", err)
		}
		if len(p.Spec.Repos) > 0 {
			next, err := repos.New(p.Spec, f.WorkDir()).GivenVersion(ctx, v.String(), commits)
			if err != nil {
				return versionChoice{}, err
			}
			return versionChoice{Version: next.Version, Reason: next.Reason, Next: &next}, nil
		}
		return versionChoice{Version: v.String(), Reason: "given with --version"}, nil
	}
	if bump == "" {
		bump = p.Spec.Version.Bump
	}
	if !slices.Contains(pipeline.Bumps, bump) {
		return versionChoice{}, usageErrorf("--bump %q: want one of %s", bump, strings.Join(pipeline.Bumps, ", "))
	}
	if len(p.Spec.Repos) > 0 {
		next, err := repos.New(p.Spec, f.WorkDir()).NextVersion(ctx, bump, commits)
		if err != nil {
			return versionChoice{}, err
		}
		return versionChoice{Version: next.Version, Reason: next.Reason, Next: &next}, nil
	}
	if bump == "auto" {
		return versionChoice{}, usageErrorf("--bump auto reads conventional commits, and this pipeline has no repos: use major, minor or patch")
	}
	last := semver.MustParse("0.0.0")
	from := "no earlier release"
	if st != nil {
		runs, err := st.Runs(ctx, pipeline.RunFilter{})
		if err != nil {
			return versionChoice{}, err
		}
		for _, r := range runs {
			if r.Status != pipeline.Succeeded || r.Version == "" {
				continue
			}
			if v, err := semver.NewVersion(r.Version); err == nil && v.GreaterThan(last) {
				last, from = v, "the newest released version, run "+r.ID
			}
		}
	}
	var next semver.Version
	switch bump {
	case "major":
		next = last.IncMajor()
	case "minor":
		next = last.IncMinor()
	case "patch":
		next = last.IncPatch()
	}
	return versionChoice{Version: next.String(), Reason: fmt.Sprintf("%s bump of %s (%s)", bump, last, from)}, nil
}
