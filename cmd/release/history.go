package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// HistoryOptions are the inputs of `release history`.
type HistoryOptions struct {
	f           *Factory
	Environment string
	Limit       int
}

// NewCmdHistory builds `release history`.
func NewCmdHistory(f *Factory, runF func(*HistoryOptions) error) *cobra.Command {
	opts := &HistoryOptions{f: f}
	cmd := &cobra.Command{
		Use:   "history ENV",
		Short: "An environment's deployments, newest first, and the images each changed",
		Long: `List what was deployed to ENV, newest first: the version, the run, its kind (run,
promote, rollback, deploy), when, and the services whose image changed from the
deployment before it. A branch deployment (release deploy, kind deploy) has no
version: it shows the ref and commit of each repo it built. With -o json:
environment, deployments (each version, runId, kind, deployedAt, images, changed
(each service, from, to), and for a branch deployment refs and commits by repo).`,
		Example: `  release history prod
  release history staging --limit 5 -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Environment = args[0]
			if runF != nil {
				return runF(opts)
			}
			return historyRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVar(&opts.Limit, "limit", 0, "at most this many deployments (0: all)")
	return cmd
}

type historyView struct {
	Environment string              `json:"environment"`
	Deployments []engine.Deployment `json:"deployments"`
}

func historyRun(ctx context.Context, opts *HistoryOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	hist, err := e.History(ctx, opts.Environment, opts.Limit)
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, historyView{Environment: opts.Environment, Deployments: hist})
	}
	if len(hist) == 0 {
		fmt.Fprintf(f.IO.ErrOut, "%s: nothing deployed yet\n", opts.Environment)
		return nil
	}
	t := newTable(f.IO.Out, f.IO.OutTTY, "VERSION", "RUN", "KIND", "DEPLOYED", "CHANGED")
	for _, d := range hist {
		var changed []string
		for _, c := range d.Changed {
			changed = append(changed, c.Service)
		}
		version := orDash(d.Version)
		if len(d.Refs) > 0 {
			version = "branch " + branchLabel(d.Refs, d.Commits)
		}
		t.row(version, d.RunID, d.Kind, fmtTime(&d.DeployedAt), orDash(strings.Join(changed, ",")))
	}
	t.flush()
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
