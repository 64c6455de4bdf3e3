package engine

import (
	"context"
	"errors"

	"github.com/sweepboard/release/pipeline"
)

// TagRequest tags every repo with a version.
type TagRequest struct {
	Version string
	Exec
}

// Tag runs the git-tag stage on its own, as a run of kind "tag", at the
// commits the release of that version was built from (its record), or at
// the branch heads when the version has no release.
func (e *Engine) Tag(ctx context.Context, req TagRequest, obs Observer) (*pipeline.Run, error) {
	p := e.Pipeline
	if len(p.Spec.Repos) == 0 {
		return nil, usagef("the pipeline has no repos to tag")
	}
	v, err := parseVersion(req.Version, p.Spec.Version.TagPrefix)
	if err != nil {
		return nil, usagef("--version: %v", err)
	}
	kind, err := e.Stages.Lookup("git-tag")
	if err != nil {
		return nil, err
	}
	commits, err := e.releaseCommits(ctx, v.String())
	if err != nil {
		return nil, err
	}
	only := *p
	only.Stages = map[string]*pipeline.Stage{"tag": {Name: "tag", Uses: "git-tag", Impl: kind.New()}}
	plan, err := only.Plan(pipeline.Slice{})
	if err != nil {
		return nil, err
	}
	run := pipeline.NewRun("tag", &only, plan, e.now())
	run.Version, run.Commits = v.String(), commits
	return run, e.execute(ctx, &only, plan, run, true, req.Exec, obs)
}

// releaseCommits are the commits a version was built from: from its
// release record; else from the run that took the version (a pipeline
// without services records no release, and a run may stop before its
// images are pushed), never the branches' heads of today; the heads only
// for a version no run of this pipeline ever had.
func (e *Engine) releaseCommits(ctx context.Context, version string) (map[string]string, error) {
	rel, err := e.recordedRelease(ctx, version)
	if err != nil {
		return nil, err
	}
	if rel != nil && len(rel.Commits) > 0 {
		return rel.Commits, nil
	}
	return e.heads(ctx)
}

// recordedRelease is what the store knows of a version of this pipeline:
// its release record, else the commits and images of the newest run that
// took the version (a pipeline without services records no release, and a
// run may stop before its images are pushed); nil when it knows nothing,
// or the engine has no store.
func (e *Engine) recordedRelease(ctx context.Context, version string) (*pipeline.Release, error) {
	if e.Store == nil {
		return nil, nil
	}
	rel, err := e.Store.Release(ctx, version)
	switch {
	case err == nil && len(rel.Commits) > 0 && rel.Pipeline == e.Pipeline.Spec.Name:
		return rel, nil
	case err != nil && !errors.Is(err, pipeline.ErrNotFound):
		return nil, err
	}
	runs, err := e.Store.Runs(ctx, pipeline.RunFilter{Kind: "run"})
	if err != nil {
		return nil, err
	}
	for _, r := range runs { // newest first
		if r.Kind == "run" && r.Pipeline == e.Pipeline.Spec.Name && r.Version == version && len(r.Commits) > 0 {
			return &pipeline.Release{Version: version, Pipeline: r.Pipeline, RunID: r.ID, Commits: r.Commits, Images: r.Images, CreatedAt: r.StartedAt}, nil
		}
	}
	return nil, nil
}
