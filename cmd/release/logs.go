package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// LogsOptions are the inputs of `release logs`.
type LogsOptions struct {
	f      *Factory
	RunID  string
	Stage  string
	Follow bool
}

// NewCmdLogs builds `release logs`.
func NewCmdLogs(f *Factory, runF func(*LogsOptions) error) *cobra.Command {
	opts := &LogsOptions{f: f}
	cmd := &cobra.Command{
		Use:   "logs RUN [STAGE]",
		Short: "Print the output a run's nodes logged",
		Long: `Print what the nodes of a run logged (command output, build logs), in order.
STAGE is a node id like push[api], or a stage name for all of its nodes.

With --follow, keep printing the lines the nodes log until the run is no longer
running, then exit 0; SIGINT stops following (exit 130) and leaves the run alone.
With -o json, the lines as a JSON list (each seq, node, at, text); with --follow,
one JSON object per line as they come.`,
		Example: `  release logs 20261126-091500-3fa9c1
  release logs 20261126-0915 build
  release logs 20261126-0915 'push[api]' --follow`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RunID = args[0]
			if len(args) > 1 {
				opts.Stage = args[1]
			}
			if runF != nil {
				return runF(opts)
			}
			return logsRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Follow, "follow", false, "keep printing new lines until the run is no longer running")
	return cmd
}

func logsRun(ctx context.Context, opts *LogsOptions) error {
	f := opts.f
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	// Reading logs needs the store only, not the pipeline file.
	e := &engine.Engine{Store: st}
	all := []pipeline.LogLine{}
	enc := json.NewEncoder(f.IO.Out)
	enc.SetEscapeHTML(false)
	run, err := e.Logs(ctx, engine.LogsRequest{RunID: opts.RunID, Stage: opts.Stage, Follow: opts.Follow}, func(run *pipeline.Run, lines []pipeline.LogLine) error {
		switch {
		case f.JSON() && opts.Follow:
			for _, l := range lines {
				if err := enc.Encode(l); err != nil {
					return err
				}
			}
		case f.JSON():
			all = append(all, lines...)
		default:
			single := oneNode(run, opts.Stage)
			for _, l := range lines {
				if single {
					fmt.Fprintln(f.IO.Out, l.Text)
				} else {
					fmt.Fprintf(f.IO.Out, "%s | %s\n", l.Node, l.Text)
				}
			}
		}
		return nil
	})
	if opts.Follow && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// Interrupted: the run goes on, and only this reader stops.
		return &codedError{code: exitInterrupted, err: silent(err)}
	}
	if err != nil {
		return err
	}
	if f.JSON() && !opts.Follow {
		return writeJSON(f.IO.Out, all)
	}
	if opts.Follow {
		fmt.Fprintf(f.IO.ErrOut, "run %s %s\n", run.ID, run.Status)
	}
	return nil
}

// oneNode reports whether stage names exactly one node of the run, whose
// lines then need no node prefix.
func oneNode(run *pipeline.Run, stage string) bool {
	if stage == "" {
		return false
	}
	n := 0
	for _, node := range run.Nodes {
		if node.ID == stage || node.Stage == stage {
			n++
		}
	}
	return n == 1
}
