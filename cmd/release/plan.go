package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// PlanOptions are the inputs of `release plan`.
type PlanOptions struct {
	f       *Factory
	Bump    string
	Version string
}

// NewCmdPlan builds `release plan`.
func NewCmdPlan(f *Factory, runF func(*PlanOptions) error) *cobra.Command {
	opts := &PlanOptions{f: f}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what a run would do: nodes, version, tags, images, hosts",
		Long: `Show the expanded DAG a run would execute (each node after the ones it needs, with
its environment), the version it would release, the tags and images it would make
and the hosts of each environment. Nothing is changed, not even the state store.`,
		Example: `  release plan
  release plan --bump major
  release plan --version 2.0.0-rc.1 -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return planRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Bump, "bump", "", "major, minor, patch or auto (default: the file's version.bump)")
	cmd.Flags().StringVar(&opts.Version, "version", "", "release this exact version instead of bumping")
	return cmd
}

// planView is the JSON shape of `release plan -o json`.
type planView struct {
	Pipeline     string            `json:"pipeline"`
	Version      string            `json:"version"`
	VersionWhy   string            `json:"versionReason"`
	Tags         map[string]string `json:"tags"`
	Images       map[string]string `json:"images"`
	Environments []envPlanView     `json:"environments"`
	Freeze       []pipeline.Window `json:"freeze"`
	Nodes        []nodePlanView    `json:"nodes"`
}

type envPlanView struct {
	Name     string   `json:"name"`
	From     string   `json:"from,omitempty"`
	Hosts    []string `json:"hosts"`
	Approval bool     `json:"approval"`
}

type nodePlanView struct {
	ID          string   `json:"id"`
	Uses        string   `json:"uses"`
	Item        string   `json:"item,omitempty"`
	Environment string   `json:"environment,omitempty"`
	Needs       []string `json:"needs"`
}

func planRun(ctx context.Context, opts *PlanOptions) error {
	f := opts.f
	p, plan, err := f.Plan(pipeline.Slice{})
	if err != nil {
		return err
	}
	st, err := f.StoreIfExists(ctx)
	if err != nil {
		return err
	}
	e := f.engineFor(p, st)
	v, err := e.NextVersion(ctx, opts.Bump, opts.Version, nil)
	if err != nil {
		return err
	}
	view := planView{Pipeline: p.Spec.Name, Version: v.Version, VersionWhy: v.Reason, Tags: map[string]string{}, Images: map[string]string{}, Environments: []envPlanView{}}
	for _, r := range p.Spec.RepoNames() {
		view.Tags[r] = p.Spec.Version.TagPrefix + v.Version
	}
	for _, s := range p.Spec.ServiceNames() {
		svc := p.Spec.Services[s]
		view.Images[s] = imageRef(p.Spec.Registry.URL, svc.Image) + ":" + v.Version
	}
	for _, name := range p.Spec.EnvironmentOrder() {
		e := p.Spec.Environments[name]
		view.Environments = append(view.Environments, envPlanView{Name: name, From: e.From, Hosts: nonNil(e.Hosts), Approval: e.Approval == "required"})
	}
	view.Freeze = p.Windows("", time.Now())
	if view.Freeze == nil {
		view.Freeze = []pipeline.Window{}
	}
	for _, n := range plan.Nodes {
		view.Nodes = append(view.Nodes, nodePlanView{ID: n.ID, Uses: n.Uses, Item: n.Item, Environment: n.Environment, Needs: n.Needs})
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, view)
	}
	printPlan(f.IO.Out, &view)
	return nil
}

func imageRef(registry, image string) string {
	if registry == "" {
		return image
	}
	return strings.TrimSuffix(registry, "/") + "/" + image
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func printPlan(w io.Writer, v *planView) {
	fmt.Fprintf(w, "pipeline %s\n", v.Pipeline)
	fmt.Fprintf(w, "version  %s (%s)\n", v.Version, v.VersionWhy)
	if len(v.Tags) > 0 {
		fmt.Fprintln(w, "\ntags")
		for _, r := range sortedKeys(v.Tags) {
			fmt.Fprintf(w, "  %-12s %s\n", r, v.Tags[r])
		}
	}
	if len(v.Images) > 0 {
		fmt.Fprintln(w, "\nimages")
		for _, s := range sortedKeys(v.Images) {
			fmt.Fprintf(w, "  %-12s %s\n", s, v.Images[s])
		}
	}
	if len(v.Environments) > 0 {
		fmt.Fprintln(w, "\nenvironments")
		for _, e := range v.Environments {
			extra := ""
			if e.From != "" {
				extra += " from " + e.From
			}
			if e.Approval {
				extra += ", approval required"
			}
			fmt.Fprintf(w, "  %-12s %s%s\n", e.Name, strings.Join(e.Hosts, " "), extra)
		}
	}
	if len(v.Freeze) > 0 {
		fmt.Fprintln(w, "\nfreeze windows")
		for _, fw := range v.Freeze {
			state := ""
			if fw.Active {
				state = " (frozen now, until " + fw.Until.Format("2006-01-02 15:04 MST") + ")"
			}
			fmt.Fprintf(w, "  %-12s %s: %s%s\n", fw.Name, strings.Join(fw.Environments, ", "), fw.Span, state)
		}
	}
	fmt.Fprintf(w, "\nnodes (%d)\n", len(v.Nodes))
	for i, n := range v.Nodes {
		line := fmt.Sprintf("  %3d  %-24s %-15s", i+1, n.ID, n.Uses)
		if n.Environment != "" {
			line += " env=" + n.Environment
		}
		if len(n.Needs) > 0 {
			line += " needs=" + strings.Join(n.Needs, ",")
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}
