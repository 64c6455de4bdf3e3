package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// NewCmdRuns builds `release runs` with its list and show verbs.
func NewCmdRuns(f *Factory) *cobra.Command {
	list := NewCmdRunsList(f, nil)
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List runs, or show one with its nodes",
		Example: `  release runs
  release runs show 20261126-091500-3fa9c1
  release runs show 20261126-0915 -o json`,
		Args: exactArgs(0),
		RunE: list.RunE,
	}
	cmd.Flags().AddFlagSet(list.Flags())
	cmd.AddCommand(list, NewCmdRunsShow(f, nil))
	return cmd
}

// RunsListOptions are the inputs of `release runs list`.
type RunsListOptions struct {
	f     *Factory
	Limit int
}

// NewCmdRunsList builds `release runs list`.
func NewCmdRunsList(f *Factory, runF func(*RunsListOptions) error) *cobra.Command {
	opts := &RunsListOptions{f: f}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runsList(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVarP(&opts.Limit, "limit", "n", 20, "at most this many runs (0: all)")
	return cmd
}

func runsList(ctx context.Context, opts *RunsListOptions) error {
	f := opts.f
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	runs, err := st.Runs(ctx, pipeline.RunFilter{Limit: opts.Limit})
	if err != nil {
		return err
	}
	if f.JSON() {
		out := []runSummary{}
		for _, r := range runs {
			out = append(out, runSummary{ID: r.ID, Kind: r.Kind, Status: string(r.Status), Version: r.Version, Environment: r.Environment, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt})
		}
		return writeJSON(f.IO.Out, out)
	}
	t := newTable(f.IO.Out, f.IO.OutTTY, "ID", "KIND", "VERSION", "STATUS", "STARTED", "DURATION")
	for _, r := range runs {
		kind := r.Kind
		if r.Environment != "" {
			kind += " " + r.Environment
		}
		t.row(r.ID, kind, r.Version, string(r.Status), fmtTime(&r.StartedAt), fmtDuration(r.StartedAt, r.FinishedAt))
	}
	t.flush()
	return nil
}

// RunsShowOptions are the inputs of `release runs show`.
type RunsShowOptions struct {
	f     *Factory
	RunID string
}

// NewCmdRunsShow builds `release runs show`.
func NewCmdRunsShow(f *Factory, runF func(*RunsShowOptions) error) *cobra.Command {
	opts := &RunsShowOptions{f: f}
	return &cobra.Command{
		Use:   "show RUN",
		Short: "Show a run: version, pinned commits, images, every node",
		Long: `Show one run. RUN is a run id or a prefix of one that matches a single run.
With -o json the shape is: id, kind, status, version, startedAt, finishedAt,
commits, images, stages (each id, stage, item, status, attempts, outputs, error).`,
		Example: `  release runs show 20261126-091500-3fa9c1
  release runs show 20261126-0915 -o json | jq '.stages[] | select(.status=="failed")'`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RunID = args[0]
			if runF != nil {
				return runF(opts)
			}
			return runsShow(cmd.Context(), opts)
		},
	}
}

func runsShow(ctx context.Context, opts *RunsShowOptions) error {
	f := opts.f
	_, r, err := f.Run(ctx, opts.RunID)
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, newRunView(r))
	}
	w := f.IO.Out
	fmt.Fprintf(w, "run      %s\n", r.ID)
	fmt.Fprintf(w, "kind     %s\n", r.Kind)
	if r.Environment != "" {
		fmt.Fprintf(w, "env      %s\n", r.Environment)
	}
	fmt.Fprintf(w, "version  %s\n", r.Version)
	fmt.Fprintf(w, "status   %s\n", r.Status)
	fmt.Fprintf(w, "started  %s\n", fmtTime(&r.StartedAt))
	fmt.Fprintf(w, "finished %s\n", fmtTime(r.FinishedAt))
	if len(r.Commits) > 0 {
		fmt.Fprintln(w, "\ncommits")
		for _, k := range sortedKeys(r.Commits) {
			fmt.Fprintf(w, "  %-12s %s\n", k, r.Commits[k])
		}
	}
	if len(r.Images) > 0 {
		fmt.Fprintln(w, "\nimages")
		for _, k := range sortedKeys(r.Images) {
			fmt.Fprintf(w, "  %-12s %s\n", k, r.Images[k])
		}
	}
	fmt.Fprintln(w)
	t := newTable(w, f.IO.OutTTY, "NODE", "STATUS", "ATTEMPTS", "TIME", "DETAIL")
	for _, n := range r.Nodes {
		detail := n.Error
		if n.Approval != nil {
			detail = "approved by " + n.Approval.By + " at " + n.Approval.At.UTC().Format(time.RFC3339)
			if n.Approval.UpFront {
				detail += " (--yes)"
			}
		}
		dur := "-"
		if n.StartedAt != nil {
			dur = fmtDuration(*n.StartedAt, n.FinishedAt)
		}
		t.row(n.ID, string(n.Status), strconv.Itoa(n.Attempts), dur, firstLine(detail))
	}
	t.flush()
	return nil
}
