package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// PromoteOptions are the inputs of `release promote`.
type PromoteOptions struct {
	f           *Factory
	Environment string
	Version     string
	Wait        bool
	Yes         bool
	Parallel    int
	Force       bool
	Reason      string
	// onStart, when set, sees the run once this process owns it.
	onStart func(*pipeline.Run)
}

// NewCmdPromote builds `release promote`.
func NewCmdPromote(f *Factory, runF func(*PromoteOptions) error) *cobra.Command {
	opts := &PromoteOptions{f: f}
	cmd := &cobra.Command{
		Use:   "promote ENV",
		Short: "Promote the release live in ENV's from environment to ENV, by digest",
		Long: `Take the release that is live in the environment ENV is promoted from (or the
version given with --version, which must have been live there), and run ENV's slice
of the pipeline with it: the same image digests, never rebuilt. The deploy tags the
images :ENV and :VERSION in the registry, by digest. The release enters ENV's history.

One run per environment at a time: when another run holds ENV, promote exits 4
naming it, or waits its turn with --wait. An environment with approval: required
waits (exit 5) until release approve RUN approve-ENV, unless --yes.`,
		Example: `  release promote staging
  release promote prod --version 1.4.0 --yes
  release promote staging --wait -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Environment = args[0]
			if opts.Parallel < 0 {
				return usageErrorf("--parallel %d: must be at least 1", opts.Parallel)
			}
			if runF != nil {
				return runF(opts)
			}
			return promoteRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Version, "version", "", "promote this version (it must have been live in the from environment)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment instead of exiting 4")
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "approve the environment's approval gate up front (recorded as such)")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "nodes run at once (0: every node of the run, up to 32)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "promote into a frozen environment (needs --reason, recorded)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	return cmd
}

func promoteRun(ctx context.Context, opts *PromoteOptions) error {
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
	run, err := e.Promote(ctx, engine.PromoteRequest{
		Environment: opts.Environment, Version: opts.Version, Yes: opts.Yes, Force: opts.Force, Reason: opts.Reason, By: f.User(),
		Exec: engine.Exec{Parallel: opts.Parallel, Wait: opts.Wait},
	}, obs)
	return w.report(run, err)
}

// RollbackOptions are the inputs of `release rollback`.
type RollbackOptions struct {
	f           *Factory
	Environment string
	To          string
	Wait        bool
	Parallel    int
}

// NewCmdRollback builds `release rollback`.
func NewCmdRollback(f *Factory, runF func(*RollbackOptions) error) *cobra.Command {
	opts := &RollbackOptions{f: f}
	cmd := &cobra.Command{
		Use:   "rollback ENV",
		Short: "Redeploy the previous (or a named) release of ENV, by digest",
		Long: `Redeploy a release from ENV's history: the one before the live one, or --to V.
Only ENV's deploy stages run, with the release's recorded digests; the rollback is
a run of its own and enters the history. It is refused before anything changes when
the registry no longer has one of the release's images.`,
		Example: `  release rollback staging
  release rollback prod --to 1.3.2`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Environment = args[0]
			if opts.Parallel < 0 {
				return usageErrorf("--parallel %d: must be at least 1", opts.Parallel)
			}
			if runF != nil {
				return runF(opts)
			}
			return rollbackRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.To, "to", "", "the version to go back to (default: the one before the live one)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment instead of exiting 4")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "nodes run at once (0: every node of the run, up to 32)")
	return cmd
}

func rollbackRun(ctx context.Context, opts *RollbackOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	w := f.watch()
	run, err := e.Rollback(ctx, engine.RollbackRequest{
		Environment: opts.Environment, To: opts.To, By: f.User(),
		Exec: engine.Exec{Parallel: opts.Parallel, Wait: opts.Wait},
	}, w.observer())
	return w.report(run, err)
}
