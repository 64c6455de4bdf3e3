package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// StatusOptions are the inputs of `release status`.
type StatusOptions struct {
	f           *Factory
	Environment string
}

// NewCmdStatus builds `release status`.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{f: f}
	return &cobra.Command{
		Use:   "status [ENV]",
		Short: "What each environment runs: version, digests, health, drift from the record",
		Long: `For each environment (or ENV), the release recorded as live and the containers
actually running on its hosts: the digest of each, its health, and drift where the
running digest is not the recorded one or a container is missing, and the commit
of each repo the environment's code is at (the commits its release pinned). With
-o json: environments (each name, version, runId, deployedAt, commits (by repo),
services (each name, digest, healthy, drift); a branch deployment adds refs, an
instance of a template (release env list) template and listen). The instances
follow the file's environments.

It exits 9 when an environment drifts from its record or runs a service that is
not healthy (an environment never deployed to, with nothing running, does not),
so that CI can gate on it; the status is printed all the same.`,
		Example: `  release status
  release status prod -o json | jq '.environments[0].services[] | select(.drift != "")'`,
		Args: rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				opts.Environment = args[0]
			}
			if runF != nil {
				return runF(opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
}

type statusView struct {
	Environments []envStatusView `json:"environments"`
}

type envStatusView struct {
	Name       string              `json:"name"`
	Version    string              `json:"version"`
	RunID      string              `json:"runId"`
	DeployedAt *time.Time          `json:"deployedAt"`
	Services   []serviceStatusView `json:"services"`
	// Refs are what a branch deployment built, by repo (the environment
	// runs no release: version is ""); absent otherwise.
	Refs map[string]string `json:"refs,omitempty"`
	// Commits are the commit of each repo the environment's code is at:
	// its release's pinned commits, or a branch deployment's.
	Commits map[string]string `json:"commits,omitempty"`
	// Template and Listen are an instance's: the template it was made of,
	// its Caddy listen addresses by service; absent otherwise.
	Template string            `json:"template,omitempty"`
	Listen   map[string]string `json:"listen,omitempty"`
}

type serviceStatusView struct {
	Name    string `json:"name"`
	Host    string `json:"host,omitempty"`
	Digest  string `json:"digest"`
	Healthy bool   `json:"healthy"`
	Drift   string `json:"drift"`
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	var names []string
	if opts.Environment != "" {
		names = []string{opts.Environment}
	}
	envs, err := e.Status(ctx, names...)
	if err != nil {
		return err
	}
	view := statusView{Environments: []envStatusView{}}
	for _, s := range envs {
		ev := envStatusView{Name: s.Name, Version: s.Version, RunID: s.RunID, DeployedAt: s.DeployedAt, Services: []serviceStatusView{}, Refs: s.Refs, Commits: s.Commits, Template: s.Template, Listen: s.Listen}
		for _, svc := range s.Services {
			ev.Services = append(ev.Services, serviceStatusView{Name: svc.Name, Host: svc.Host, Digest: svc.Digest, Healthy: svc.Healthy, Drift: svc.Drift})
		}
		view.Environments = append(view.Environments, ev)
	}
	drifting := driftingEnvironments(envs)
	if f.JSON() {
		if err := writeJSON(f.IO.Out, view); err != nil {
			return err
		}
		return drifting
	}
	w := f.IO.Out
	for i, ev := range view.Environments {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if ev.Template != "" {
			var listen []string
			for _, svc := range sortedKeys(ev.Listen) {
				listen = append(listen, svc+" on "+ev.Listen[svc])
			}
			fmt.Fprintf(w, "%s: instance of %s, network %s", ev.Name, ev.Template, e.Pipeline.Spec.NetworkName(ev.Name))
			if len(listen) > 0 {
				fmt.Fprintf(w, ", %s", strings.Join(listen, ", "))
			}
			fmt.Fprintln(w)
		}
		switch {
		case len(ev.Refs) > 0:
			fmt.Fprintf(w, "%s: branch deployment %s (run %s, %s)\n", ev.Name, branchLabel(ev.Refs, ev.Commits), ev.RunID, fmtTime(ev.DeployedAt))
		case ev.Version == "":
			fmt.Fprintf(w, "%s: nothing deployed yet\n", ev.Name)
		default:
			fmt.Fprintf(w, "%s: %s (run %s, %s)\n", ev.Name, ev.Version, ev.RunID, fmtTime(ev.DeployedAt))
			if len(ev.Commits) > 0 {
				fmt.Fprintf(w, "commits: %s\n", commitsLabel(ev.Commits))
			}
		}
		t := newTable(w, f.IO.OutTTY, "SERVICE", "HOST", "DIGEST", "HEALTH", "DRIFT")
		for _, s := range ev.Services {
			health := "unhealthy"
			if s.Healthy {
				health = "healthy"
			}
			t.row(s.Name, s.Host, s.Digest, health, s.Drift)
		}
		t.flush()
	}
	return drifting
}

// branchLabel is what a branch deployment built, for people:
// "api=feature/login@1a2b3c4, web=…".
func branchLabel(refs, commits map[string]string) string {
	var parts []string
	for _, repo := range sortedKeys(refs) {
		s := repo + "=" + refs[repo]
		if c := commits[repo]; c != "" && !strings.HasPrefix(c, refs[repo]) {
			s += "@" + c[:min(7, len(c))]
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// commitsLabel is the commit of each repo, for people:
// "api@1a2b3c4d5e6f, web@…", the first 12 hex digits of each.
func commitsLabel(commits map[string]string) string {
	var parts []string
	for _, repo := range sortedKeys(commits) {
		c := commits[repo]
		parts = append(parts, repo+"@"+c[:min(12, len(c))])
	}
	return strings.Join(parts, ", ")
}

// driftingEnvironments is the exit-9 error naming the environments that
// drift from their record or run an unhealthy service, or nil.
func driftingEnvironments(envs []*engine.EnvStatus) error {
	var names []string
	for _, s := range envs {
		never := s.Version == "" && s.RunID == ""
		for _, svc := range s.Services {
			never = never && svc.State == "missing" && svc.Drift == ""
		}
		if s.Drifted() && !never {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return &codedError{code: exitDrift, err: fmt.Errorf("status: %s drifts from its record or runs an unhealthy service", strings.Join(names, ", "))}
}

// ShowOptions are the inputs of `release show`.
type ShowOptions struct {
	f       *Factory
	Version string
}

// NewCmdShow builds `release show`.
func NewCmdShow(f *Factory, runF func(*ShowOptions) error) *cobra.Command {
	opts := &ShowOptions{f: f}
	return &cobra.Command{
		Use:   "show VERSION",
		Short: "Show a release: the commit of each repo, the digest of each image, where it ran",
		Long: `Show a release's record: the commit each repo was built from (the code of every
environment that runs it is at these commits), the digest of each image, every
deployment of it (environment, when, kind, run) and the environments that run it
now. With -o json: version, pipeline, runId, commits, images, createdAt,
deployments (each seq, environment, version, runId, kind, images, deployedAt),
live (environment names).`,
		Example: `  release show 1.4.0
  release show v1.4.0 -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Version = args[0]
			if runF != nil {
				return runF(opts)
			}
			return showRun(cmd.Context(), opts)
		},
	}
}

type releaseView struct {
	*pipeline.Release
	Deployments []*pipeline.Deployment `json:"deployments"`
	// Live are the environments that run the release now (their newest
	// deployment is it), in promotion order: their code is at Commits.
	Live []string `json:"live"`
}

func showRun(ctx context.Context, opts *ShowOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	version := strings.TrimPrefix(opts.Version, p.Spec.Version.TagPrefix)
	rel, err := st.Release(ctx, version)
	if err != nil {
		return err
	}
	all, err := st.Deployments(ctx, "", 0)
	if err != nil {
		return err
	}
	view := releaseView{Release: rel, Deployments: []*pipeline.Deployment{}, Live: []string{}}
	newest := map[string]*pipeline.Deployment{}
	for _, d := range all {
		if d.Version == rel.Version {
			view.Deployments = append(view.Deployments, d)
		}
		if n := newest[d.Environment]; n == nil || d.Seq > n.Seq {
			newest[d.Environment] = d
		}
	}
	for _, env := range p.Spec.EnvironmentOrder() {
		if d := newest[env]; d != nil && d.Version == rel.Version && !d.Branch() {
			view.Live = append(view.Live, env)
		}
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, view)
	}
	w := f.IO.Out
	fmt.Fprintf(w, "release %s (run %s, %s)\n\ncommits\n", rel.Version, rel.RunID, fmtTime(&rel.CreatedAt))
	for _, k := range sortedKeys(rel.Commits) {
		fmt.Fprintf(w, "  %-12s %s\n", k, rel.Commits[k])
	}
	fmt.Fprintln(w, "\nimages")
	for _, k := range sortedKeys(rel.Images) {
		fmt.Fprintf(w, "  %-12s %s\n", k, rel.Images[k])
	}
	fmt.Fprintln(w, "\ndeployments")
	for _, d := range view.Deployments {
		fmt.Fprintf(w, "  %-12s %s by %s %s\n", d.Environment, fmtTime(&d.At), d.Kind, d.RunID)
	}
	live := "nowhere"
	if len(view.Live) > 0 {
		live = strings.Join(view.Live, ", ")
	}
	fmt.Fprintf(w, "\nlive in %s\n", live)
	return nil
}
