package main

import (
	"cmp"
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

// allocateVersion picks the version of a new run (see resolveVersion) and
// takes it in the store for runID, atomically: a version another run of the
// pipeline holds, or held once, is never handed out again. A bumped version
// that is taken is bumped again from the newest version taken; a version
// given with --version that is taken is refused.
func allocateVersion(ctx context.Context, f *Factory, p *pipeline.Pipeline, st pipeline.Store, runID, bump, explicit string, commits map[string]string) (versionChoice, error) {
	v, err := resolveVersion(ctx, f, p, st, bump, explicit, commits)
	if err != nil {
		return v, err
	}
	applied := cmp.Or(bump, p.Spec.Version.Bump)
	if v.Next != nil && v.Next.Bump != "" && v.Next.Bump != "none" {
		applied = v.Next.Bump
	}
	got, err := st.AllocateVersion(ctx, p.Spec.Name, runID, func(taken []string) (string, error) {
		want := semver.MustParse(v.Version)
		var newest *semver.Version
		for _, t := range taken {
			tv, err := semver.NewVersion(t)
			if err != nil {
				continue
			}
			if tv.Equal(want) && explicit != "" {
				return "", usageErrorf("--version %s: taken by another run of %s; a version is handed out once: give another --version, or let release bump it", want, p.Spec.Name)
			}
			if newest == nil || tv.GreaterThan(newest) {
				newest = tv
			}
		}
		if explicit != "" || newest == nil || want.GreaterThan(newest) {
			return want.String(), nil
		}
		var next semver.Version
		switch applied {
		case "major":
			next = newest.IncMajor()
		case "patch":
			next = newest.IncPatch()
		default:
			next = newest.IncMinor()
		}
		v.Reason += fmt.Sprintf("; %s is taken by an earlier run, so %s bump of %s, the newest version handed out", want, applied, newest)
		return next.String(), nil
	})
	if err != nil {
		return versionChoice{}, err
	}
	v.Version = got
	return v, nil
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
			if r.Pipeline != p.Spec.Name || r.Status != pipeline.Succeeded || r.Version == "" {
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
