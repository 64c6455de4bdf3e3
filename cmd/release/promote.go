package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages/deploy"
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
			if runF != nil {
				return runF(opts)
			}
			return promoteRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Version, "version", "", "promote this version (it must have been live in the from environment)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment instead of exiting 4")
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "approve the environment's approval gate up front (recorded as such)")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", runtime.NumCPU(), "nodes run at once")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "promote into a frozen environment (needs --reason, recorded)")
	cmd.Flags().StringVar(&opts.Reason, "reason", "", "why a freeze is overridden, recorded in the run")
	return cmd
}

func promoteRun(ctx context.Context, opts *PromoteOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	name := opts.Environment
	env, ok := p.Spec.Environments[name]
	if !ok {
		return usageErrorf("unknown environment %q (known: %s)", name, strings.Join(sortedKeys(p.Spec.Environments), ", "))
	}
	if env.From == "" {
		return usageErrorf("environment %s has no from: it gets releases from release run, not by promotion", name)
	}
	forced, err := checkFreeze(f, p, []string{name}, opts.Force, opts.Reason)
	if err != nil {
		return err
	}
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	version, err := promotable(ctx, p, st, env.From, opts.Version)
	if err != nil {
		return err
	}
	rel, err := st.Release(ctx, version)
	if err != nil {
		return fmt.Errorf("release %s has no record of its images: %w", version, err)
	}
	if missing, err := deploy.Missing(ctx, p.Spec, rel.Images, f.Getenv); err != nil {
		return err
	} else if len(missing) > 0 {
		return fmt.Errorf("release %s cannot be promoted: the registry no longer has %s", version, strings.Join(missing, ", "))
	}
	plan, err := p.Plan(pipeline.Slice{Environment: name})
	if err != nil {
		return fmt.Errorf("promote %s: %w", name, err)
	}
	run := pipeline.NewRun("promote", p, plan, time.Now())
	run.Environment, run.Version, run.Commits, run.Images = name, rel.Version, rel.Commits, rel.Images
	run.Params["from"] = env.From
	run.Override = forced
	if opts.Yes {
		approveUpFront(f, p, run)
	}
	return execute(ctx, f, p, plan, run, execOptions{parallel: opts.Parallel, create: true, wait: opts.Wait})
}

// checkFreeze refuses a run into environments a freeze window covers now,
// naming the window, unless forced with a reason; the override it returns
// (nil when no window is active) is recorded in the run, with who and when.
func checkFreeze(f *Factory, p *pipeline.Pipeline, envs []string, force bool, reason string) (*pipeline.Override, error) {
	if force && strings.TrimSpace(reason) == "" {
		return nil, usageErrorf("--force needs --reason: say why the freeze is overridden")
	}
	var o *pipeline.Override
	for _, env := range envs {
		err := p.CheckFrozen(env, time.Now())
		var frozen *pipeline.FrozenError
		if !errors.As(err, &frozen) {
			continue
		}
		if !force {
			return nil, err
		}
		if o == nil {
			o = &pipeline.Override{By: f.User(), Reason: reason, At: time.Now().UTC()}
		}
		if !slices.Contains(o.Windows, frozen.Window.Name) {
			o.Windows = append(o.Windows, frozen.Window.Name)
		}
		fmt.Fprintf(f.IO.ErrOut, "release: %s is frozen by window %s; going anyway (--force): %s\n", env, frozen.Window.Name, reason)
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

// promotable is the version to promote from env: the one given, which must
// be in its history, or the one live there now.
func promotable(ctx context.Context, p *pipeline.Pipeline, st pipeline.Store, from, given string) (string, error) {
	history, err := st.Deployments(ctx, from, 0)
	if err != nil {
		return "", err
	}
	if given == "" {
		if len(history) == 0 {
			return "", fmt.Errorf("nothing to promote: no release was ever deployed to %s", from)
		}
		return history[0].Version, nil
	}
	v, err := repos.ParseVersion(given, p.Spec.Version.TagPrefix)
	if err != nil {
		return "", usageErrorf("--version: %v", err)
	}
	for _, d := range history {
		if d.Version == v.String() {
			return d.Version, nil
		}
	}
	return "", fmt.Errorf("version %s never reached %s (it has had: %s); promote only what passed through %s", v, from, versions(history), from)
}

func versions(ds []*pipeline.Deployment) string {
	var vs []string
	for _, d := range ds {
		if !slices.Contains(vs, d.Version) {
			vs = append(vs, d.Version)
		}
	}
	if len(vs) == 0 {
		return "nothing"
	}
	return strings.Join(vs, ", ")
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
			if runF != nil {
				return runF(opts)
			}
			return rollbackRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.To, "to", "", "the version to go back to (default: the one before the live one)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a locked environment instead of exiting 4")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", runtime.NumCPU(), "nodes run at once")
	return cmd
}

func rollbackRun(ctx context.Context, opts *RollbackOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	name := opts.Environment
	if _, ok := p.Spec.Environments[name]; !ok {
		return usageErrorf("unknown environment %q (known: %s)", name, strings.Join(sortedKeys(p.Spec.Environments), ", "))
	}
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	history, err := st.Deployments(ctx, name, 0)
	if err != nil {
		return err
	}
	if len(history) == 0 {
		return fmt.Errorf("nothing to roll back: no release was ever deployed to %s", name)
	}
	var target *pipeline.Deployment
	if opts.To != "" {
		v, err := repos.ParseVersion(opts.To, p.Spec.Version.TagPrefix)
		if err != nil {
			return usageErrorf("--to: %v", err)
		}
		for _, d := range history {
			if d.Version == v.String() {
				target = d
				break
			}
		}
		if target == nil {
			return fmt.Errorf("version %s was never deployed to %s (it has had: %s)", v, name, versions(history))
		}
	} else {
		for _, d := range history[1:] {
			if d.Version != history[0].Version {
				target = d
				break
			}
		}
		if target == nil {
			return fmt.Errorf("nothing to roll back to: %s has only had %s", name, history[0].Version)
		}
	}
	if missing, err := deploy.Missing(ctx, p.Spec, target.Images, f.Getenv); err != nil {
		return err
	} else if len(missing) > 0 {
		return fmt.Errorf("cannot roll %s back to %s: the registry no longer has %s", name, target.Version, strings.Join(missing, ", "))
	}
	var deploys []string
	for _, st := range p.Stages {
		if d, ok := st.Impl.(interface{ DeploysRelease() bool }); ok && d.DeploysRelease() && st.Environment == name {
			deploys = append(deploys, st.Name)
		}
	}
	if len(deploys) == 0 {
		return fmt.Errorf("environment %s has no deploy stage to roll back with", name)
	}
	plan, err := p.Plan(pipeline.Slice{Environment: name, Stages: deploys})
	if err != nil {
		return err
	}
	run := pipeline.NewRun("rollback", p, plan, time.Now())
	run.Environment, run.Version, run.Images = name, target.Version, target.Images
	if rel, err := st.Release(ctx, target.Version); err == nil {
		run.Commits = rel.Commits
	} else if !errors.Is(err, pipeline.ErrNotFound) {
		return err
	}
	run.Params["from"] = history[0].Version
	run.Stages = plan.Stages()
	return execute(ctx, f, p, plan, run, execOptions{parallel: opts.Parallel, create: true, wait: opts.Wait})
}
