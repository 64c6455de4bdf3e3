package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// DeployOptions are the inputs of `release deploy`.
type DeployOptions struct {
	f           *Factory
	Environment string
	Refs        []string
	Yes         bool
	Wait        bool
	Parallel    int
	Force       bool
	Reason      string
}

// NewCmdDeploy builds `release deploy`.
func NewCmdDeploy(f *Factory, runF func(*DeployOptions) error) *cobra.Command {
	opts := &DeployOptions{f: f}
	cmd := &cobra.Command{
		Use:   "deploy ENV --ref REPO=BRANCH|SHA ...",
		Short: "Deploy branches of some repos to ENV, beside what it runs: no release",
		Long: `Build the services of each repo given with --ref at the commit the ref points
at (a branch, a tag or a commit; an image built once per commit is reused), and
deploy them to ENV with every other service at the digest ENV runs now. Only the
stages of no environment (build, push) and ENV's own run, never a git-tag or
github-release stage.

It is a branch deployment, not a release: no version is taken, no repo is tagged,
no release notes are written, and it is never promoted: release promote takes the
newest release of its from environment and says which branch deployment it
skipped. release status and release history show the ref and commit of each repo
it built. Refs are checked before anything is made. A CI job on every push to a
feature branch can call it with --yes; exit codes are those of release run.

ENV may be an instance of a template of the file (an environment named dev-*):
release deploy dev-login --ref api=feature/login makes environment dev-login on
its first deployment, with its own network and containers and, for each service
of the template's proxy.listen range, a Caddy address of its own (see release env
list). It runs the stages of the template's from environment, and every service
no --ref names (now or before) at the release that environment runs, by digest.
A template itself is never deployed; release env rm NAME removes an instance.`,
		Example: `  release deploy dev --ref api=feature/login
  release deploy dev --ref api=feature/login --ref web=feature/login --yes
  release deploy dev --ref api=3fa9c1e
  release deploy dev-login --ref api=feature/login --yes   # an instance of dev-*`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Environment = args[0]
			if opts.Parallel < 0 {
				return usageErrorf("--parallel %d: must be at least 1", opts.Parallel)
			}
			if runF != nil {
				return runF(opts)
			}
			return deployRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringArrayVar(&opts.Refs, "ref", nil, "REPO=REF: build the repo's services at this branch, tag or commit (repeatable)")
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "approve the environment's approval gate up front (recorded as such)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment instead of exiting 4")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "nodes run at once (0: every node of the run, up to 32)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "deploy into a frozen environment (needs --reason, recorded)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	return cmd
}

func deployRun(ctx context.Context, opts *DeployOptions) error {
	f := opts.f
	refs, err := engine.ParseRefs(opts.Refs)
	if err != nil {
		return err
	}
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	w := f.watch()
	run, err := e.Deploy(ctx, engine.DeployRequest{
		Environment: opts.Environment, Refs: refs, Yes: opts.Yes, Force: opts.Force, Reason: opts.Reason, By: f.User(),
		Exec: engine.Exec{Parallel: opts.Parallel, Wait: opts.Wait},
	}, w.observer())
	return w.report(run, err)
}
