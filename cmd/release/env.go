package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// NewCmdEnv builds `release env` with its list, rm and prune verbs: the
// environments per branch, instances of the file's templates.
func NewCmdEnv(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "env",
		Short: "The environments per branch: list, remove and prune instances of templates",
		Long: `An environment of the pipeline file whose name ends in -* (dev-*) is a template.
release deploy dev-login --ref api=feature/login makes the instance dev-login of
it: its own network release-PIPELINE-dev-login, its own containers, and for each
service of the template's proxy.listen a Caddy address of its own, the first
port of the template's range HOST:LOW-HIGH that no other environment, instance or
Caddy server holds. The services no --ref names run the release the template's
from environment runs. release env list shows the instances, release env rm
removes one, release env prune those whose branches are gone or that expired.`,
		Example: `  release deploy dev-login --ref api=feature/login --yes
  release env list
  release env rm dev-login
  release env prune --dry-run`,
		Args: exactArgs(0),
	}
	cmd.AddCommand(NewCmdEnvList(f, nil), NewCmdEnvRm(f, nil), NewCmdEnvPrune(f, nil))
	return cmd
}

// EnvListOptions are the inputs of `release env list`.
type EnvListOptions struct{ f *Factory }

// NewCmdEnvList builds `release env list`.
func NewCmdEnvList(f *Factory, runF func(*EnvListOptions) error) *cobra.Command {
	opts := &EnvListOptions{f: f}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the instances of the templates, by name",
		Long: `List the instances of the file's templates, by name: the template, the ref and
commit of each repo a deployment built (the newest per repo), when it was last
deployed, its network and its Caddy listen addresses. With -o json: environments
(each name, template, refs and commits by repo, deployedAt, createdAt, network,
listen by service, expires: when release env prune removes it unless it is
deployed again, null without the template's expire).`,
		Example: `  release env list
  release env list -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return envListRun(cmd.Context(), opts)
		},
	}
	return cmd
}

type envListView struct {
	Environments []engine.EnvironmentInstance `json:"environments"`
}

func envListRun(ctx context.Context, opts *EnvListOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	list, err := e.Instances(ctx)
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, envListView{Environments: list})
	}
	if len(list) == 0 {
		fmt.Fprintln(f.IO.ErrOut, "no environment per branch: release deploy NAME --ref REPO=BRANCH makes one of a template")
		return nil
	}
	t := newTable(f.IO.Out, f.IO.OutTTY, "NAME", "TEMPLATE", "REFS", "DEPLOYED", "NETWORK", "LISTEN")
	for _, in := range list {
		var listen []string
		for _, svc := range sortedKeys(in.Listen) {
			listen = append(listen, svc+"="+in.Listen[svc])
		}
		t.row(in.Name, in.Template, orDash(branchLabel(in.Refs, in.Commits)), fmtTime(in.DeployedAt), in.Network, orDash(strings.Join(listen, ",")))
	}
	t.flush()
	return nil
}

// EnvRmOptions are the inputs of `release env rm`.
type EnvRmOptions struct {
	f    *Factory
	Name string
	Wait bool
}

// NewCmdEnvRm builds `release env rm`.
func NewCmdEnvRm(f *Factory, runF func(*EnvRmOptions) error) *cobra.Command {
	opts := &EnvRmOptions{f: f}
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove an instance of a template: its containers, network, Caddy servers and record",
		Long: `Remove the instance NAME of a template: every container its deployments made on
the template's hosts, its network there, the Caddy server of each of its
services, then its record, which frees its listen addresses. It holds the
instance's lock meanwhile: a deployment of it running now makes it exit 4, or
wait with --wait. Every step is safe to redo: run twice, or from two processes
at once, both finish and nothing is left. An environment of the file or a
template is refused. Prints what it removed; with -o json: name, removed
(containers, networks, routes) and gone (true when there was no record).`,
		Example: `  release env rm dev-login
  release env rm dev-login --wait -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return envRmRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a deployment of the instance instead of exiting 4")
	return cmd
}

type envRmView struct {
	Name    string         `json:"name"`
	Removed engine.Removed `json:"removed"`
	Gone    bool           `json:"gone"`
}

func envRmRun(ctx context.Context, opts *EnvRmOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	removed, gone, err := e.RemoveEnvironment(ctx, engine.RemoveRequest{Name: opts.Name, Wait: opts.Wait})
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, envRmView{Name: opts.Name, Removed: orRemoved(removed), Gone: gone})
	}
	printRemoved(f, opts.Name, removed, gone)
	return nil
}

func orRemoved(r engine.Removed) engine.Removed {
	return engine.Removed{Containers: orNone(r.Containers), Networks: orNone(r.Networks), Routes: orNone(r.Routes)}
}

func printRemoved(f *Factory, name string, r engine.Removed, gone bool) {
	for _, c := range r.Containers {
		fmt.Fprintf(f.IO.Out, "%s: removed container %s\n", name, c)
	}
	for _, n := range r.Networks {
		fmt.Fprintf(f.IO.Out, "%s: removed network %s\n", name, n)
	}
	for _, id := range r.Routes {
		fmt.Fprintf(f.IO.Out, "%s: removed Caddy server %s\n", name, id)
	}
	if gone {
		fmt.Fprintf(f.IO.Out, "%s: no record (removed before)\n", name)
		return
	}
	fmt.Fprintf(f.IO.Out, "%s: removed\n", name)
}

// EnvPruneOptions are the inputs of `release env prune`.
type EnvPruneOptions struct {
	f      *Factory
	DryRun bool
	Wait   bool
}

// NewCmdEnvPrune builds `release env prune`.
func NewCmdEnvPrune(f *Factory, runF func(*EnvPruneOptions) error) *cobra.Command {
	opts := &EnvPruneOptions{f: f}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove the instances whose branches are gone or that expired",
		Long: `Remove, as release env rm does, every instance of a template that expired (not
deployed for the template's expire:, e.g. expire: 72h) or all of whose refs are
branches their remotes no longer have (deleted after a merge). A remote that does
not answer keeps its instances and makes prune exit 1 once the others are done;
an instance deployed from a tag or a commit only ever expires. Run it from a
schedule, or after each merge. With -o json: pruned (each name, reason, removed).`,
		Example: `  release env prune
  release env prune --dry-run
  release env prune -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return envPruneRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "say what would be removed, remove nothing")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a deployment of an instance instead of skipping it with an error")
	return cmd
}

type envPruneView struct {
	Pruned []engine.Pruned `json:"pruned"`
	DryRun bool            `json:"dryRun"`
}

func envPruneRun(ctx context.Context, opts *EnvPruneOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	pruned, err := e.PruneEnvironments(ctx, engine.PruneRequest{DryRun: opts.DryRun, Wait: opts.Wait})
	for i := range pruned {
		pruned[i].Removed = orRemoved(pruned[i].Removed)
	}
	if f.JSON() {
		if werr := writeJSON(f.IO.Out, envPruneView{Pruned: pruned, DryRun: opts.DryRun}); werr != nil {
			return werr
		}
		return err
	}
	for _, p := range pruned {
		if opts.DryRun {
			fmt.Fprintf(f.IO.Out, "%s: would be removed: %s\n", p.Name, p.Reason)
			continue
		}
		fmt.Fprintf(f.IO.Out, "%s: %s\n", p.Name, p.Reason)
		printRemoved(f, p.Name, p.Removed, false)
	}
	if len(pruned) == 0 && err == nil {
		fmt.Fprintln(f.IO.ErrOut, "nothing to prune")
	}
	return err
}
