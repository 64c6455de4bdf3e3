package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
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
	Refs     []string
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
that reaches an approval gate stops with exit code 5 until it is approved.

With --ref REPO=BRANCH (repeatable) the run is a hotfix release from other
branches, a release branch say: its version is a patch on the newest release
those branches descend from (release/1.4 cut at 1.4.0 gives 1.4.1 while main is
at 1.6.0-to-be), the repos without a --ref are built at that release's commits,
and every repo is tagged at the commit built. Refs are checked before anything
is made. The next run without --ref continues the main line.`,
		Example: `  release run
  release run --bump major --yes
  release run --version 2.0.0-rc.1 --parallel 4
  release run --ref api=release/1.4 --yes`,
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
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "nodes run at once (0: every node of the run, up to 32)")
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "approve every approval gate up front (recorded as such)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for locked environments instead of exiting 4")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "run into frozen environments (needs --reason, recorded)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	cmd.Flags().StringArrayVar(&opts.Refs, "ref", nil, "REPO=BRANCH: a hotfix release from this branch of the repo (repeatable)")
	return cmd
}

func runRun(ctx context.Context, opts *RunOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	refs, err := engine.ParseRefs(opts.Refs)
	if err != nil {
		return err
	}
	w := f.watch()
	run, err := e.Run(ctx, engine.RunRequest{
		Bump: opts.Bump, Version: opts.Version, Refs: refs, Yes: opts.Yes, Force: opts.Force, Reason: opts.Reason, By: f.User(),
		Exec: engine.Exec{Parallel: opts.Parallel, Wait: opts.Wait},
	}, w.observer())
	if errors.Is(err, engine.ErrNothingToRelease) {
		// Not a failure: a CI job on a push of chores has nothing to do.
		fmt.Fprintf(f.IO.ErrOut, "release: %v; run %s not started\n", err, w.shown)
		return nil
	}
	return w.report(run, err)
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
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "nodes run at once (0: every node of the run, up to 32)")
	cmd.Flags().BoolVar(&opts.AllowChanged, "allow-changed", false, "resume even if the pipeline file changed the DAG")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment or a run another process executes instead of exiting 4")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "go through the freeze windows active now (needs --reason, recorded with who and when)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	return cmd
}

func resumeRun(ctx context.Context, opts *ResumeOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	w := f.watch()
	obs := w.observer()
	if opts.onStart != nil {
		started := obs.Started
		obs.Started = func(r *pipeline.Run) { started(r); opts.onStart(r) }
	}
	run, err := e.Resume(ctx, engine.ResumeRequest{
		RunID: opts.RunID, AllowChanged: opts.AllowChanged, Force: opts.Force, Reason: opts.Reason, By: f.User(),
		Exec: engine.Exec{Parallel: opts.Parallel, Wait: opts.Wait},
	}, obs)
	return w.report(run, err)
}
