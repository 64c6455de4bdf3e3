package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// RunRequest starts a new release of the whole pipeline.
type RunRequest struct {
	Bump    string // major, minor, patch or auto; "" is the file's version.bump
	Version string // release exactly this version instead of bumping
	// Refs build a hotfix release from other branches, by repo: the
	// version is a patch on the newest release those branches descend
	// from, and the other repos are at that release's commits.
	Refs map[string]string
	// Yes approves every approval gate up front, recorded as such.
	Yes bool
	// Force goes through the freeze windows active now; Reason says why.
	Force  bool
	Reason string
	By     string // who starts it
	Exec
}

// Run starts a new release: it pins the head of every repo, takes the next
// version of the pipeline (atomically, once), and executes every stage.
// The run is returned once it was recorded, with the executor's error; a
// run refused before it was recorded (a freeze, a held lock) is nil.
func (e *Engine) Run(ctx context.Context, req RunRequest, obs Observer) (*pipeline.Run, error) {
	p := e.Pipeline
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		return nil, err
	}
	override, err := e.checkFreeze(p.Environments(), req.Force, req.Reason, req.By, obs)
	if err != nil {
		return nil, err
	}
	var hot *hotfix
	if len(req.Refs) > 0 {
		// Bad refs are refused before a run is made.
		if hot, err = e.prepareHotfix(ctx, req); err != nil {
			return nil, err
		}
		p = withBranches(p, req.Refs)
	}
	run := pipeline.NewRun("run", p, plan, e.now())
	if obs.Created != nil {
		obs.Created(run.ID)
	}
	var commits map[string]string
	var v Version
	if hot != nil {
		commits = hot.commits
		if req.Version != "" {
			v, err = e.allocate(ctx, run.ID, "", req.Version, commits)
		} else {
			v, err = e.allocateHotfix(ctx, run.ID, hot)
		}
		run.Refs = maps.Clone(req.Refs)
	} else {
		if commits, err = e.fetchHeads(ctx, obs); err != nil {
			return nil, err
		}
		v, err = e.allocate(ctx, run.ID, req.Bump, req.Version, commits)
	}
	if err != nil {
		return nil, err
	}
	run.Version, run.Commits = v.Version, commits
	run.Params["versionReason"] = v.Reason
	run.Override = override
	if req.Bump != "" {
		run.Params["bump"] = req.Bump
	}
	if req.Yes {
		e.approveUpFront(run, req.By)
	}
	return run, e.execute(ctx, p, plan, run, true, req.Exec, obs)
}

func (e *Engine) heads(ctx context.Context) (map[string]string, error) {
	if e.Repos == nil || len(e.Pipeline.Spec.Repos) == 0 {
		return nil, nil
	}
	return e.Repos.Heads(ctx)
}

// HeadsReporter is Repos that can report each repo's head as it is
// fetched; the engine uses it when the Observer asks (Fetched).
type HeadsReporter interface {
	HeadsEach(ctx context.Context, fetched func(repo, head string, took time.Duration)) (map[string]string, error)
}

// fetchHeads is heads, with each repo's fetch reported to obs.Fetched.
func (e *Engine) fetchHeads(ctx context.Context, obs Observer) (map[string]string, error) {
	hr, ok := e.Repos.(HeadsReporter)
	if !ok || obs.Fetched == nil || len(e.Pipeline.Spec.Repos) == 0 {
		return e.heads(ctx)
	}
	if obs.Fetching != nil {
		obs.Fetching(e.Pipeline.Spec.RepoNames())
	}
	return hr.HeadsEach(ctx, obs.Fetched)
}

// approveUpFront records a --yes approval on every approval node.
func (e *Engine) approveUpFront(run *pipeline.Run, by string) {
	now := e.now().UTC()
	for _, n := range run.Nodes {
		if e.Pipeline.Stages[n.Stage].Uses == "approval" && n.Approval == nil {
			n.Approval = &stages.Approval{By: by, At: now, UpFront: true}
		}
	}
	run.Params["yes"] = "true"
}

// ResumeRequest continues a run from its record.
type ResumeRequest struct {
	RunID string
	// AllowChanged runs the pipeline file's new DAG when it changed since
	// the run started, as long as every node of it is in the run.
	AllowChanged bool
	// Force goes through the freeze windows active now; Reason says why.
	// The override is recorded with who and when.
	Force  bool
	Reason string
	By     string
	Exec
}

// Resume continues a run: nodes that succeeded keep their outputs, every
// other node runs. Its version and pinned commits do not change. Whether it
// may go on (succeeded already, cancelled, owned by another process) is
// decided once this process holds its claim.
func (e *Engine) Resume(ctx context.Context, req ResumeRequest, obs Observer) (*pipeline.Run, error) {
	run, err := e.Store.Run(ctx, req.RunID)
	if err != nil {
		return nil, err
	}
	p, err := e.pipelineOf(ctx, run)
	if err != nil {
		return run, err
	}
	switch {
	case run.Status == pipeline.Succeeded:
		return run, &pipeline.DoneError{RunID: run.ID}
	case run.Status == pipeline.Skipped:
		return run, refusedf("run %s was skipped (%s); nothing to resume", run.ID, run.SkipReason)
	case run.Cancel != nil:
		return run, &pipeline.CancelledError{RunID: run.ID, By: run.Cancel.By}
	}
	if req.Force || req.Reason != "" {
		envs := map[string]bool{}
		for _, n := range run.Nodes {
			if n.Environment != "" && n.Status != pipeline.Succeeded {
				envs[n.Environment] = true
			}
		}
		o, err := e.checkFreeze(slices.Sorted(maps.Keys(envs)), req.Force, req.Reason, req.By, obs)
		if err != nil {
			return run, err
		}
		run.Override = mergeOverride(run.Override, o)
	}
	plan, err := p.Plan(e.sliceOf(run))
	if err != nil {
		return run, err
	}
	if h := plan.Hash(); h != run.PlanHash {
		if !req.AllowChanged {
			return run, usagef("run %s: the pipeline file changed the DAG since the run started (plan %s, now %s); resume with --allow-changed to run the new DAG, or start a new run", run.ID, run.PlanHash, h)
		}
		for _, n := range plan.Nodes {
			if run.Node(n.ID) == nil {
				return run, refusedf("run %s: the changed pipeline adds node %s, which the run does not have; start a new run", run.ID, n.ID)
			}
		}
		run.PlanHash = h
	}
	return run, e.execute(ctx, p, plan, run, false, req.Exec, obs)
}

// SliceOf is the part of the pipeline a run covers.
func SliceOf(run *pipeline.Run) pipeline.Slice {
	var s pipeline.Slice
	if run.Kind == "promote" || run.Kind == "rollback" {
		s.Environment = run.Environment
	}
	s.Stages = run.Stages
	return s
}

// NextVersion is the version the next run would release, without taking it.
func (e *Engine) NextVersion(ctx context.Context, bump, given string, commits map[string]string) (Version, error) {
	p := e.Pipeline
	prefix := p.Spec.Version.TagPrefix
	if given != "" {
		v, err := parseVersion(given, prefix)
		if err != nil {
			return Version{}, usagef("--version: %v", err)
		}
		if e.Repos != nil && len(p.Spec.Repos) > 0 {
			return e.Repos.Next(ctx, "", v.String(), commits)
		}
		return Version{Version: v.String(), Reason: "given with --version"}, nil
	}
	if bump == "" {
		bump = p.Spec.Version.Bump
	}
	if !slices.Contains(pipeline.Bumps, bump) {
		return Version{}, usagef("--bump %q: want one of %s", bump, strings.Join(pipeline.Bumps, ", "))
	}
	if e.Repos != nil && len(p.Spec.Repos) > 0 {
		return e.Repos.Next(ctx, bump, "", commits)
	}
	if bump == "auto" {
		return Version{}, usagef("--bump auto reads conventional commits, and this pipeline has no repos: use major, minor or patch")
	}
	// Without repos, the newest version this pipeline released decides.
	last := semver.MustParse("0.0.0")
	from := "no earlier release"
	if e.Store != nil {
		runs, err := e.Store.Runs(ctx, pipeline.RunFilter{})
		if err != nil {
			return Version{}, err
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
	next := bumped(last, bump)
	return Version{Version: next.String(), Bump: bump, Reason: fmt.Sprintf("%s bump of %s (%s)", bump, last, from)}, nil
}

// parseVersion reads a version as a user gives it, with or without the
// tag prefix.
func parseVersion(s, prefix string) (*semver.Version, error) {
	v, err := semver.StrictNewVersion(strings.TrimPrefix(s, prefix))
	if err != nil {
		return nil, fmt.Errorf("parse version %q: %w", s, err)
	}
	return v, nil
}

func bumped(v *semver.Version, bump string) semver.Version {
	switch bump {
	case "major":
		return v.IncMajor()
	case "patch":
		return v.IncPatch()
	}
	return v.IncMinor()
}

// allocate picks the version of a new run and takes it in the store for
// runID, atomically: a version another run of the pipeline holds, or held
// once, is never handed out again. A bumped version that is taken is bumped
// again from the newest version handed out; a given version that is taken
// is refused.
func (e *Engine) allocate(ctx context.Context, runID, bump, given string, commits map[string]string) (Version, error) {
	v, err := e.NextVersion(ctx, bump, given, commits)
	if err != nil {
		return v, err
	}
	p := e.Pipeline
	applied := v.Bump
	if applied == "" || applied == "none" {
		applied = cmp.Or(bump, p.Spec.Version.Bump)
	}
	got, err := e.Store.AllocateVersion(ctx, p.Spec.Name, runID, func(taken []string) (string, error) {
		want := semver.MustParse(v.Version)
		var newest *semver.Version
		for _, t := range taken {
			tv, err := semver.NewVersion(t)
			if err != nil {
				continue
			}
			if given != "" && tv.Equal(want) {
				return "", usagef("--version %s: taken by another run of %s; a version is handed out once: give another --version, or let release bump it", want, p.Spec.Name)
			}
			if newest == nil || tv.GreaterThan(newest) {
				newest = tv
			}
		}
		if given != "" || newest == nil || want.GreaterThan(newest) {
			return want.String(), nil
		}
		next := bumped(newest, applied)
		v.Reason += fmt.Sprintf("; %s is taken by an earlier run, so a %s bump of %s, the newest version handed out", want, applied, newest)
		return next.String(), nil
	})
	if err != nil {
		return Version{}, err
	}
	v.Version = got
	return v, nil
}

// checkFreeze refuses a run into environments a freeze window covers now,
// naming the window, unless forced with a reason; the override it returns
// (nil when no window is active) is recorded in the run, with who and when.
func (e *Engine) checkFreeze(envs []string, force bool, reason, by string, obs Observer) (*pipeline.Override, error) {
	if force && strings.TrimSpace(reason) == "" {
		return nil, usagef("--force needs --reason: say why the freeze is overridden")
	}
	var o *pipeline.Override
	for _, env := range envs {
		err := e.Pipeline.CheckFrozen(env, e.now())
		var frozen *pipeline.FrozenError
		if !errors.As(err, &frozen) {
			continue
		}
		if !force {
			return nil, &RefusedError{Err: err}
		}
		if o == nil {
			o = &pipeline.Override{By: by, Reason: reason, At: e.now().UTC()}
		}
		if !slices.Contains(o.Windows, frozen.Window.Name) {
			o.Windows = append(o.Windows, frozen.Window.Name)
		}
		obs.notice("%s is frozen by window %s; going anyway (--force): %s", env, frozen.Window.Name, reason)
	}
	return o, nil
}

// mergeOverride adds a new override to the one a run has: the newest who,
// why and when, and every window either names.
func mergeOverride(old, o *pipeline.Override) *pipeline.Override {
	if o == nil {
		return old
	}
	if old != nil {
		for _, w := range old.Windows {
			if !slices.Contains(o.Windows, w) {
				o.Windows = append(o.Windows, w)
			}
		}
	}
	return o
}
