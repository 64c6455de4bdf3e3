package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// DeployRequest deploys branches (or commits) of some repos to an
// environment, beside what it runs now.
type DeployRequest struct {
	Environment string
	// Refs are the branch, tag or commit of each repo to build, by repo.
	Refs map[string]string
	Yes  bool // approve the environment's gates up front
	// Force goes through a freeze window, with Reason.
	Force  bool
	Reason string
	By     string
	Exec
}

// publishing are the kinds of stage that publish a version: a branch
// deployment has none, so it never runs them.
var publishing = []string{"git-tag", "github-release"}

// Deploy builds the services of the repos given a ref, at the commits
// those refs point at (an image built once per commit is reused), and
// deploys them to the environment with every other service at the digest
// the environment runs now. It is no release: no version is taken, no tag
// or release notes are made, and it is recorded in the environment's
// history as a branch deployment, which promote never takes. Bad refs are
// refused before anything is made.
func (e *Engine) Deploy(ctx context.Context, req DeployRequest, obs Observer) (*pipeline.Run, error) {
	p := e.Pipeline
	name := req.Environment
	tpl, err := e.checkInstanceTarget("deploy", name)
	if err != nil {
		return nil, err
	}
	if len(req.Refs) == 0 {
		return nil, usagef("deploy %s: give at least one --ref REPO=BRANCH|SHA: release deploy deploys branches; releases go out with release run and release promote", name)
	}
	refs, err := e.resolveRefs(ctx, req.Refs)
	if err != nil {
		return nil, err
	}
	built := servicesOf(p.Spec, refs)
	for _, repo := range slices.Sorted(maps.Keys(refs)) {
		if !slices.ContainsFunc(built, func(svc string) bool { return p.Spec.Services[svc].Repo == repo }) {
			return nil, usagef("--ref %s=%s: no service is built from repo %s", repo, refs[repo].Ref, repo)
		}
	}
	override, err := e.checkFreeze([]string{name}, req.Force, req.Reason, req.By, obs)
	if err != nil {
		return nil, err
	}

	// The other services stay at what the environment runs now; in an
	// instance, at the release its template's from environment runs.
	var images, commits map[string]string
	var now string
	if tpl == "" {
		if images, commits, now, err = e.running(ctx, name); err != nil {
			return nil, err
		}
		if err := e.keeping(ctx, name, images, built, func(missing string) error {
			return refusedf("deploy %s: %s runs nothing of %s: deploy a release to it first, or give those repos a --ref too", name, name, missing)
		}); err != nil {
			return nil, err
		}
	} else {
		var in *pipeline.Instance
		if images, commits, now, in, err = e.prepareInstance(ctx, name, tpl, built, req.Wait); err != nil {
			return nil, err
		}
		p = instancePipeline(p, in)
	}
	for repo, r := range refs {
		commits[repo] = r.Commit
	}

	plan, err := p.Plan(pipeline.Slice{Stages: branchStages(p, name), Services: built})
	if err != nil {
		return nil, refusedf("deploy %s: %w", name, err)
	}
	if !slices.ContainsFunc(plan.Nodes, func(n pipeline.PlanNode) bool { return n.Environment == name }) {
		return nil, refusedf("deploy %s: environment %s has no stage to deploy with", name, name)
	}
	run := pipeline.NewRun(pipeline.KindDeploy, p, plan, e.now())
	run.Environment, run.Commits, run.Images, run.Refs = name, commits, images, maps.Clone(req.Refs)
	run.Stages = plan.Stages()
	run.Override = override
	if now != "" {
		run.Params["over"] = now
	}
	if req.Yes {
		e.approveUpFront(run, req.By)
	}
	if obs.Created != nil {
		obs.Created(run.ID)
	}
	return run, e.execute(ctx, p, plan, run, true, req.Exec, obs)
}

// keeping drops the services a deployment builds from images, and checks
// that the registry still has the image of every other one; refuse says
// why when a service has none.
func (e *Engine) keeping(ctx context.Context, name string, images map[string]string, built []string, refuse func(missing string) error) error {
	for _, svc := range built {
		delete(images, svc)
	}
	spec := e.Pipeline.Spec
	var missing []string
	for _, svc := range spec.ServiceNames() {
		if !slices.Contains(built, svc) && images[svc] == "" {
			missing = append(missing, fmt.Sprintf("%s (repo %s)", svc, spec.Services[svc].Repo))
		}
	}
	if len(missing) > 0 {
		return refuse(strings.Join(missing, ", "))
	}
	return e.checkImages(ctx, images, "deploy "+name+" keeps what it runs")
}

// servicesOf are the services built from the repos, sorted.
func servicesOf(spec *stages.Spec, refs map[string]Ref) []string {
	var out []string
	for _, svc := range spec.ServiceNames() {
		if _, ok := refs[spec.Services[svc].Repo]; ok {
			out = append(out, svc)
		}
	}
	return out
}

// branchStages are the stages a branch deployment to env runs: those of
// no environment (build, push, tests) and those of env, without the ones
// that publish a version.
func branchStages(p *pipeline.Pipeline, env string) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(p.Stages)) {
		st := p.Stages[name]
		if slices.Contains(publishing, st.Uses) || (st.Environment != "" && st.Environment != env) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// running is what env runs now by its history: the images, the commits
// they were built from, and what it is, for people ("1.4.0", "a branch
// deployment, run X"); all empty when nothing was deployed there.
func (e *Engine) running(ctx context.Context, env string) (images, commits map[string]string, what string, err error) {
	images, commits = map[string]string{}, map[string]string{}
	hist, err := e.Store.Deployments(ctx, env, 1)
	if err != nil || len(hist) == 0 {
		return images, commits, "", err
	}
	d := hist[0]
	maps.Copy(images, d.Images)
	if d.Branch() {
		maps.Copy(commits, d.Commits)
		return images, commits, "branch deployment " + d.RunID, nil
	}
	rel, err := e.recordedRelease(ctx, d.Version)
	if err != nil {
		return nil, nil, "", err
	}
	if rel != nil {
		maps.Copy(commits, rel.Commits)
	}
	return images, commits, d.Version, nil
}

// sliceOf is the part of the pipeline a recorded run covers.
func (e *Engine) sliceOf(run *pipeline.Run) pipeline.Slice {
	s := SliceOf(run)
	if run.Kind == pipeline.KindDeploy {
		refs := map[string]Ref{}
		for repo, ref := range run.Refs {
			refs[repo] = Ref{Repo: repo, Ref: ref}
		}
		s.Services = servicesOf(e.Pipeline.Spec, refs)
	}
	return s
}

// describeRefs is refs for people: "api=feature/login@1a2b3c4, web=…".
func describeRefs(refs, commits map[string]string) string {
	var parts []string
	for _, repo := range slices.Sorted(maps.Keys(refs)) {
		s := repo + "=" + refs[repo]
		if c := commits[repo]; c != "" && !strings.HasPrefix(c, refs[repo]) {
			s += "@" + c[:min(7, len(c))]
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
