package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	f           *Factory
	Limit       int
	Status      []string
	Environment string
}

// NewCmdRunsList builds `release runs list`.
func NewCmdRunsList(f *Factory, runF func(*RunsListOptions) error) *cobra.Command {
	opts := &RunsListOptions{f: f}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first",
		Long: `List runs, newest first. --status keeps the runs in one of the statuses given
(repeat it, or separate them with commas); --env keeps the runs that promote or
roll back that environment or have a node in it; --limit counts what is kept.`,
		Example: `  release runs --status waiting
  release runs --status failed,fenced --env prod --limit 5`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Limit < 0 {
				return usageErrorf("--limit %d: want 0 (all) or more", opts.Limit)
			}
			for _, s := range opts.Status {
				if !slices.Contains(pipeline.Statuses, pipeline.Status(s)) {
					return usageErrorf("--status %q: want one of %s", s, joinStatuses(pipeline.Statuses))
				}
			}
			if runF != nil {
				return runF(opts)
			}
			return runsList(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVarP(&opts.Limit, "limit", "n", 20, "at most this many runs (0: all)")
	cmd.Flags().StringSliceVar(&opts.Status, "status", nil, "only runs in these statuses: "+joinStatuses(pipeline.Statuses))
	cmd.Flags().StringVar(&opts.Environment, "env", "", "only runs that act in this environment")
	return cmd
}

func joinStatuses(ss []pipeline.Status) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func runsList(ctx context.Context, opts *RunsListOptions) error {
	f := opts.f
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	filter := pipeline.RunFilter{Limit: opts.Limit, Environment: opts.Environment}
	for _, s := range opts.Status {
		filter.Status = append(filter.Status, pipeline.Status(s))
	}
	runs, err := st.Runs(ctx, filter)
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
commits, images, stages (each id, stage, item, status, attempts, outputs, error,
startedAt and finishedAt (RFC 3339, null until then), durationMs (whole
milliseconds from start to finish, null until it finished)).`,
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
			if ref := r.Refs[k]; ref != "" {
				fmt.Fprintf(w, "  %-12s %s (--ref %s)\n", k, r.Commits[k], ref)
				continue
			}
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
	t := newTable(w, f.IO.OutTTY, "NODE", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "DETAIL")
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
		t.row(n.ID, string(n.Status), strconv.Itoa(n.Attempts), fmtTime(n.StartedAt), dur, firstLine(detail))
	}
	t.flush()
	return nil
}
