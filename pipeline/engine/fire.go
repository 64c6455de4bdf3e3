package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/sweepboard/release/pipeline"
)

// FireRequest is one fire of a schedule, already claimed by the caller so
// that no other server fires it too.
type FireRequest struct {
	Schedule string
	At       time.Time
	Bump     string
	Exec
}

// Fire makes the release a schedule asks for: as Run, unless there is
// nothing new to release or an environment is frozen, in which case it
// records a run of no nodes with status skipped and the reason.
func (e *Engine) Fire(ctx context.Context, req FireRequest, obs Observer) (*pipeline.Run, error) {
	p := e.Pipeline
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		return nil, err
	}
	run := pipeline.NewRun("run", p, plan, e.now())
	run.Schedule = req.Schedule
	run.Params["fire"] = req.At.UTC().Format(time.RFC3339)
	if req.Bump != "" {
		run.Params["bump"] = req.Bump
	}
	skip := func(reason string) (*pipeline.Run, error) { return e.recordSkipped(ctx, run, reason) }
	if _, err := e.checkFreeze(p.Environments(), false, "", "", obs); err != nil {
		var frozen *pipeline.FrozenError
		if errors.As(err, &frozen) {
			return skip(fmt.Sprintf("%s is frozen by window %s (%s)", frozen.Environment, frozen.Window.Name, frozen.Window.Span))
		}
		return nil, err
	}
	commits, err := e.heads(ctx)
	if err != nil {
		return nil, err
	}
	run.Commits = commits
	if reason, err := e.nothingNew(ctx, commits); err != nil {
		return nil, err
	} else if reason != "" {
		return skip(reason)
	}
	// Decide first, without taking a version: a fire that releases
	// nothing must not use one up.
	v, err := e.NextVersion(ctx, req.Bump, "", commits)
	if errors.Is(err, ErrNothingToRelease) {
		return skip(err.Error())
	}
	if err != nil {
		return nil, err
	}
	if v.Quiet {
		return skip("no commit in any repo since " + v.PreviousTag)
	}
	if v, err = e.allocate(ctx, run.ID, req.Bump, "", commits); err != nil {
		return nil, err
	}
	run.Version = v.Version
	run.Params["versionReason"] = v.Reason
	return run, e.execute(ctx, p, plan, run, true, req.Exec, obs)
}

// nothingNew reports why there is nothing to release when every repo is at
// the commit of the newest release run of this pipeline (one that
// succeeded, waits at a gate, or still runs): "" when something is new.
func (e *Engine) nothingNew(ctx context.Context, commits map[string]string) (string, error) {
	if len(commits) == 0 {
		return "", nil
	}
	runs, err := e.Store.Runs(ctx, pipeline.RunFilter{})
	if err != nil {
		return "", err
	}
	for _, r := range runs {
		if r.Kind != "run" || r.Version == "" || r.Pipeline != e.Pipeline.Spec.Name {
			continue
		}
		if r.Status != pipeline.Succeeded && r.Status != pipeline.Waiting && r.Status != pipeline.Running {
			continue
		}
		if maps.Equal(r.Commits, commits) {
			return fmt.Sprintf("no commit in any repo since release %s (run %s)", r.Version, r.ID), nil
		}
		return "", nil
	}
	return "", nil
}

// recordSkipped records a fire that released nothing: a run of no nodes,
// status skipped, with the reason.
func (e *Engine) recordSkipped(ctx context.Context, run *pipeline.Run, reason string) (*pipeline.Run, error) {
	now := e.now().UTC()
	skipped := &pipeline.Run{
		ID: run.ID, Kind: "run", Pipeline: run.Pipeline, Status: pipeline.Skipped,
		Commits: run.Commits, Params: maps.Clone(run.Params), StartedAt: run.StartedAt, FinishedAt: &now,
		Schedule: run.Schedule, SkipReason: reason,
	}
	if err := e.Store.CreateRun(ctx, skipped); err != nil {
		return nil, err
	}
	return skipped, nil
}
