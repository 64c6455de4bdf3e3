package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages"
)

// RunOptions are the inputs of `release run`.
type RunOptions struct {
	f        *Factory
	Bump     string
	Version  string
	Parallel int
	Yes      bool
	Wait     bool
	Force    bool
	Reason   string
}

// NewCmdRun builds `release run`.
func NewCmdRun(f *Factory, runF func(*RunOptions) error) *cobra.Command {
	opts := &RunOptions{f: f}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the whole pipeline as a new release",
		Long: `Start a run of the whole pipeline: pin the head commit of every repo, pick the
version, and run every stage as soon as the stages it needs have succeeded, up to
--parallel at once. The run id is printed first; progress goes to stderr, live on a
terminal and one line per change otherwise. A failed run can be resumed; a run
that reaches an approval gate stops with exit code 5 until it is approved.`,
		Example: `  release run
  release run --bump major --yes
  release run --version 2.0.0-rc.1 --parallel 4`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Parallel < 0 {
				return usageErrorf("--parallel %d: must be at least 1", opts.Parallel)
			}
			if runF != nil {
				return runF(opts)
			}
			return runRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Bump, "bump", "", "major, minor, patch or auto (default: the file's version.bump)")
	cmd.Flags().StringVar(&opts.Version, "version", "", "release this exact version instead of bumping")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", runtime.NumCPU(), "nodes run at once")
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "approve every approval gate up front (recorded as such)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for locked environments instead of exiting 4")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "run into frozen environments (needs --reason, recorded)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	return cmd
}

func runRun(ctx context.Context, opts *RunOptions) error {
	f := opts.f
	p, plan, err := f.Plan(pipeline.Slice{})
	if err != nil {
		return err
	}
	forced, err := checkFreeze(f, p, p.Environments(), opts.Force, opts.Reason)
	if err != nil {
		return err
	}
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	var commits map[string]string
	if len(p.Spec.Repos) > 0 {
		commits, err = repos.New(p.Spec, f.WorkDir()).Heads(ctx)
		if err != nil {
			return err
		}
	}
	run := pipeline.NewRun("run", p, plan, time.Now())
	v, err := allocateVersion(ctx, f, p, st, run.ID, opts.Bump, opts.Version, commits)
	if errors.Is(err, repos.ErrNothingToRelease) {
		// Not a failure: a CI job on a push of chores has nothing to do.
		fmt.Fprintf(f.IO.ErrOut, "release: %v; no run started\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	run.Version, run.Commits = v.Version, commits
	run.Params["versionReason"] = v.Reason
	run.Override = forced
	if opts.Bump != "" {
		run.Params["bump"] = opts.Bump
	}
	if opts.Yes {
		approveUpFront(f, p, run)
	}
	return execute(ctx, f, p, plan, run, execOptions{parallel: opts.Parallel, create: true, wait: opts.Wait})
}

// approveUpFront records a --yes approval on every approval node.
func approveUpFront(f *Factory, p *pipeline.Pipeline, run *pipeline.Run) {
	now := time.Now().UTC()
	for _, n := range run.Nodes {
		if p.Stages[n.Stage].Uses == "approval" && n.Approval == nil {
			n.Approval = &stages.Approval{By: f.User(), At: now, UpFront: true}
		}
	}
	run.Params["yes"] = "true"
}

// execOptions say how a run executes.
type execOptions struct {
	parallel int
	create   bool // a new run: record it once its locks are held
	wait     bool // wait for held environment locks instead of exiting 4
	// onStart, when set, sees the run once this process owns it and it is
	// recorded, before any node starts (the server answers then).
	onStart func(*pipeline.Run)
}

// locksOf are the environment locks a run holds: one per environment its
// nodes deploy to or act in.
func locksOf(plan *pipeline.Plan) []string {
	var locks []string
	for _, n := range plan.Nodes {
		if n.Environment != "" {
			locks = append(locks, "env/"+n.Environment)
		}
	}
	return locks
}

// execute runs the nodes of run that have not succeeded and reports.
func execute(ctx context.Context, f *Factory, p *pipeline.Pipeline, plan *pipeline.Plan, run *pipeline.Run, o execOptions) error {
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	prog := newProgress(f.IO.ErrOut, f.IO.ErrTTY && !f.Verbose, f.IO.ErrTTY && !f.NoColor, run)
	x := &pipeline.Executor{
		Store:    st,
		Parallel: o.parallel,
		WorkDir:  f.WorkDir(),
		Observe:  prog.event,
		Locks:    locksOf(plan),
		Wait:     o.wait,
		LeaseTTL: f.LeaseTTL(),
		OnStart: func(run *pipeline.Run) {
			if o.onStart != nil {
				o.onStart(run)
			}
			// The run id comes first: a script keeps it with head -n1.
			if f.JSON() {
				fmt.Fprintf(f.IO.ErrOut, "run %s\n", run.ID)
			} else {
				fmt.Fprintln(f.IO.Out, run.ID)
			}
		},
	}
	if f.Verbose {
		x.LogTo = func(l pipeline.LogLine) { prog.log(l) }
	}
	start := time.Now()
	if o.create {
		err = x.Start(ctx, p, plan, run)
	} else {
		err = x.Execute(ctx, p, plan, run)
	}
	var held *pipeline.HeldError
	if errors.As(err, &held) {
		if o.create && run.Kind == "run" && run.Version != "" {
			// Refused before it was recorded: nothing was published
			// under its version, which the next run may take.
			_ = st.FreeVersion(context.WithoutCancel(ctx), run.Pipeline, run.Version, run.ID)
		}
		return &codedError{code: exitLocked, err: err}
	}
	var done *pipeline.DoneError
	if errors.As(err, &done) {
		// Found so once this process owned the run: nothing ran.
		return err
	}
	var cancelled *pipeline.CancelledError
	prog.done()
	status := fmt.Sprintf("run %s %s in %s", run.ID, run.Status, time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(f.IO.ErrOut, status)
	if f.JSON() {
		if jerr := writeJSON(f.IO.Out, newRunView(run)); jerr != nil {
			return errors.Join(err, jerr)
		}
	}
	var we *pipeline.WaitingError
	if errors.As(err, &we) {
		for _, n := range we.Nodes {
			fmt.Fprintf(f.IO.ErrOut, "waiting for approval: release approve %s %s\n", run.ID, n)
		}
		return silent(err)
	}
	var fe *pipeline.FailedError
	if errors.As(err, &fe) {
		if hint := notResumable(fe); hint != "" {
			fmt.Fprintf(f.IO.ErrOut, "release: %v\n%s\n", err, hint)
		} else {
			fmt.Fprintf(f.IO.ErrOut, "release: %v\nresume with: release resume %s\n", err, run.ID)
		}
		return silent(err)
	}
	var fenced *pipeline.FencedError
	switch {
	case errors.Is(err, pipeline.ErrInterrupted):
		fmt.Fprintf(f.IO.ErrOut, "interrupted; resume with: release resume %s\n", run.ID)
		return silent(err)
	case errors.As(err, &fenced):
		fmt.Fprintf(f.IO.ErrOut, "release: %v\nresume with: release resume %s\n", err, run.ID)
		return silent(err)
	case errors.As(err, &cancelled):
		fmt.Fprintf(f.IO.ErrOut, "release: %v\n", err)
		return silent(err)
	}
	return err
}

// notResumable is what to do instead of a resume when a failure cannot be
// mended by one: the version is already published with other contents.
func notResumable(fe *pipeline.FailedError) string {
	for _, n := range fe.Nodes {
		if strings.Contains(n.Error, stages.ErrPublished.Error()) {
			return "this run cannot publish its version: start a new run (release run), which takes the next version"
		}
	}
	return ""
}

// ResumeOptions are the inputs of `release resume`.
type ResumeOptions struct {
	f            *Factory
	RunID        string
	Parallel     int
	AllowChanged bool
	Wait         bool
	Force        bool
	Reason       string
	onStart      func(*pipeline.Run)
}

// NewCmdResume builds `release resume`.
func NewCmdResume(f *Factory, runF func(*ResumeOptions) error) *cobra.Command {
	opts := &ResumeOptions{f: f}
	cmd := &cobra.Command{
		Use:   "resume RUN",
		Short: "Continue a run that failed, waited or was interrupted",
		Long: `Continue a run from its record: nodes that succeeded keep their outputs and are not
run again; every other node runs. The run's version and pinned commits do not
change. If the pipeline file now gives another DAG, resume refuses unless
--allow-changed is given (and even then every node of the new DAG must exist in
the run).`,
		Example: `  release resume 20261126-091500-3fa9c1
  release resume 20261126-0915 --parallel 1`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RunID = args[0]
			if runF != nil {
				return runF(opts)
			}
			return resumeRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVar(&opts.Parallel, "parallel", runtime.NumCPU(), "nodes run at once")
	cmd.Flags().BoolVar(&opts.AllowChanged, "allow-changed", false, "resume even if the pipeline file changed the DAG")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment or a run another process executes instead of exiting 4")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "go through the freeze windows active now (needs --reason, recorded with who and when)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	return cmd
}

func resumeRun(ctx context.Context, opts *ResumeOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	_, run, err := f.Run(ctx, opts.RunID)
	if err != nil {
		return err
	}
	switch {
	case run.Status == pipeline.Succeeded:
		return &pipeline.DoneError{RunID: run.ID}
	case run.Status == pipeline.Skipped:
		return fmt.Errorf("run %s was skipped (%s); nothing to resume", run.ID, run.SkipReason)
	case run.Cancel != nil:
		return &pipeline.CancelledError{RunID: run.ID, By: run.Cancel.By}
	}
	if opts.Force || opts.Reason != "" {
		envs := map[string]bool{}
		for _, n := range run.Nodes {
			if n.Environment != "" && n.Status != pipeline.Succeeded {
				envs[n.Environment] = true
			}
		}
		o, err := checkFreeze(f, p, slices.Sorted(maps.Keys(envs)), opts.Force, opts.Reason)
		if err != nil {
			return err
		}
		run.Override = mergeOverride(run.Override, o)
	}
	plan, err := p.Plan(sliceOf(run))
	if err != nil {
		return err
	}
	if h := plan.Hash(); h != run.PlanHash {
		if !opts.AllowChanged {
			return &codedError{code: exitUsage, err: fmt.Errorf("run %s: the pipeline file changed the DAG since the run started (plan %s, now %s); resume with --allow-changed to run the new DAG, or start a new run", run.ID, run.PlanHash, h)}
		}
		for _, n := range plan.Nodes {
			if run.Node(n.ID) == nil {
				return fmt.Errorf("run %s: the changed pipeline adds node %s, which the run does not have; start a new run", run.ID, n.ID)
			}
		}
		run.PlanHash = h
	}
	return execute(ctx, f, p, plan, run, execOptions{parallel: opts.Parallel, wait: opts.Wait, onStart: opts.onStart})
}

// sliceOf is the part of the pipeline a run covers.
func sliceOf(run *pipeline.Run) pipeline.Slice {
	var s pipeline.Slice
	if run.Kind == "promote" || run.Kind == "rollback" {
		s.Environment = run.Environment
	}
	s.Stages = run.Stages
	return s
}
