package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// PromoteRequest deploys to an environment what is live in the one it is
// promoted from.
type PromoteRequest struct {
	Environment string
	Version     string // "": the one live in the from environment
	Yes         bool   // approve its gates up front
	Force       bool   // through a freeze window, with Reason
	Reason      string
	By          string
	Exec
}

// Promote runs exactly the environment's slice with a release from its
// from environment's history, by digest: never rebuilt. A version that
// never reached the from environment, or whose images the registry no
// longer has, is refused before anything changes.
func (e *Engine) Promote(ctx context.Context, req PromoteRequest, obs Observer) (*pipeline.Run, error) {
	p := e.Pipeline
	name := req.Environment
	env, ok := p.Spec.Environments[name]
	if !ok {
		if err := e.branchEnvironment("promote", name); err != nil {
			return nil, err
		}
		return nil, usagef("unknown environment %q (known: %s)", name, strings.Join(slices.Sorted(maps.Keys(p.Spec.Environments)), ", "))
	}
	if env.From == "" {
		return nil, usagef("environment %s has no from: it gets releases from release run, not by promotion", name)
	}
	override, err := e.checkFreeze([]string{name}, req.Force, req.Reason, req.By, obs)
	if err != nil {
		return nil, err
	}
	version, err := e.promotable(ctx, name, env.From, req.Version, obs)
	if err != nil {
		return nil, err
	}
	rel, err := e.Store.Release(ctx, version)
	if err != nil {
		return nil, refusedf("release %s has no record of its images: %w", version, err)
	}
	if err := e.checkImages(ctx, rel.Images, "release "+version+" cannot be promoted"); err != nil {
		return nil, err
	}
	plan, err := p.Plan(pipeline.Slice{Environment: name})
	if err != nil {
		return nil, refusedf("promote %s: %w", name, err)
	}
	run := pipeline.NewRun("promote", p, plan, e.now())
	run.Environment, run.Version, run.Commits, run.Images = name, rel.Version, rel.Commits, rel.Images
	run.Params["from"] = env.From
	run.Override = override
	if req.Yes {
		e.approveUpFront(run, req.By)
	}
	return run, e.execute(ctx, p, plan, run, true, req.Exec, obs)
}

func (e *Engine) checkImages(ctx context.Context, images map[string]string, what string) error {
	if e.Registry == nil {
		return nil
	}
	missing, err := e.Registry.Missing(ctx, images)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return refusedf("%s: the registry no longer has %s", what, strings.Join(missing, ", "))
	}
	return nil
}

// promotable is the version to promote from env: the one given, which must
// be in its history, or the newest release deployed there. Branch
// deployments are never promoted: the newest release before them is, and
// obs is told which were skipped; when env runs that release already,
// there is nothing to promote and the refusal names the branch deployment.
func (e *Engine) promotable(ctx context.Context, env, from, given string, obs Observer) (string, error) {
	history, err := e.Store.Deployments(ctx, from, 0)
	if err != nil {
		return "", err
	}
	if given == "" {
		if len(history) == 0 {
			return "", refusedf("nothing to promote: no release was ever deployed to %s", from)
		}
		var skipped *pipeline.Deployment
		for _, d := range history {
			if d.Branch() {
				if skipped == nil {
					skipped = d
				}
				continue
			}
			if skipped == nil {
				return d.Version, nil
			}
			what := fmt.Sprintf("%s runs branch deployment %s (%s), which is never promoted", from, skipped.RunID, describeRefs(skipped.Refs, skipped.Commits))
			if cur, err := e.Store.Deployments(ctx, env, 1); err != nil {
				return "", err
			} else if len(cur) == 1 && !cur[0].Branch() && cur[0].Version == d.Version {
				return "", refusedf("nothing to promote: %s; %s runs %s already, the newest release %s ran; merge the branch and release it (release run)", what, env, d.Version, from)
			}
			obs.notice("%s; promoting %s, the newest release %s ran", what, d.Version, from)
			return d.Version, nil
		}
		return "", refusedf("nothing to promote: %s has had only branch deployments (the newest: %s, %s), and a branch deployment is never promoted; release it (release run) first", from, skipped.RunID, describeRefs(skipped.Refs, skipped.Commits))
	}
	v, err := parseVersion(given, e.Pipeline.Spec.Version.TagPrefix)
	if err != nil {
		return "", usagef("--version: %v", err)
	}
	for _, d := range history {
		if !d.Branch() && d.Version == v.String() {
			return d.Version, nil
		}
	}
	return "", refusedf("version %s never reached %s (it has had: %s); promote only what passed through %s", v, from, versions(history), from)
}

func versions(ds []*pipeline.Deployment) string {
	var vs []string
	for _, d := range ds {
		if !d.Branch() && !slices.Contains(vs, d.Version) {
			vs = append(vs, d.Version)
		}
	}
	if len(vs) == 0 {
		return "nothing"
	}
	return strings.Join(vs, ", ")
}

// RollbackRequest redeploys a release from an environment's history.
type RollbackRequest struct {
	Environment string
	To          string // "": the release before the live one
	By          string
	Exec
}

// Rollback runs only the environment's deploy stages with a release from
// its history, by digest, as a run of its own that enters the history.
func (e *Engine) Rollback(ctx context.Context, req RollbackRequest, obs Observer) (*pipeline.Run, error) {
	p := e.Pipeline
	name := req.Environment
	if _, ok := p.Spec.Environments[name]; !ok {
		if err := e.branchEnvironment("rollback", name); err != nil {
			return nil, err
		}
		return nil, usagef("unknown environment %q (known: %s)", name, strings.Join(slices.Sorted(maps.Keys(p.Spec.Environments)), ", "))
	}
	history, err := e.Store.Deployments(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	if len(history) == 0 {
		return nil, refusedf("nothing to roll back: no release was ever deployed to %s", name)
	}
	var target *pipeline.Deployment
	if req.To != "" {
		v, err := parseVersion(req.To, p.Spec.Version.TagPrefix)
		if err != nil {
			return nil, usagef("--to: %v", err)
		}
		for _, d := range history {
			if !d.Branch() && d.Version == v.String() {
				target = d
				break
			}
		}
		if target == nil {
			return nil, refusedf("version %s was never deployed to %s (it has had: %s)", v, name, versions(history))
		}
	} else {
		// A branch deployment live now is rolled back to the newest
		// release before it; one further back is no release to go to.
		for _, d := range history[1:] {
			if !d.Branch() && (history[0].Branch() || d.Version != history[0].Version) {
				target = d
				break
			}
		}
		if target == nil {
			return nil, refusedf("nothing to roll back to: %s has only had %s", name, versions(history))
		}
	}
	if err := e.checkImages(ctx, target.Images, "cannot roll "+name+" back to "+target.Version); err != nil {
		return nil, err
	}
	var deploys []string
	for _, st := range p.Stages {
		if d, ok := st.Impl.(stages.Deployer); ok && d.DeploysRelease() && st.Environment == name {
			deploys = append(deploys, st.Name)
		}
	}
	if len(deploys) == 0 {
		return nil, refusedf("environment %s has no deploy stage to roll back with", name)
	}
	plan, err := p.Plan(pipeline.Slice{Environment: name, Stages: deploys})
	if err != nil {
		return nil, err
	}
	run := pipeline.NewRun("rollback", p, plan, e.now())
	run.Environment, run.Version, run.Images = name, target.Version, target.Images
	if rel, err := e.Store.Release(ctx, target.Version); err == nil {
		run.Commits = rel.Commits
	} else if !errors.Is(err, pipeline.ErrNotFound) {
		return nil, err
	}
	run.Params["from"] = history[0].Version
	run.Stages = plan.Stages()
	return run, e.execute(ctx, p, plan, run, true, req.Exec, obs)
}
