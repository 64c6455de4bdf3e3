package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// LogsOptions are the inputs of `release logs`.
type LogsOptions struct {
	f     *Factory
	RunID string
	Stage string
}

// NewCmdLogs builds `release logs`.
func NewCmdLogs(f *Factory, runF func(*LogsOptions) error) *cobra.Command {
	opts := &LogsOptions{f: f}
	return &cobra.Command{
		Use:   "logs RUN [STAGE]",
		Short: "Print the output a run's nodes logged",
		Long: `Print what the nodes of a run logged (command output, build logs), in order.
STAGE is a node id like push[api], or a stage name for all of its nodes.`,
		Example: `  release logs 20261126-091500-3fa9c1
  release logs 20261126-0915 build
  release logs 20261126-0915 'push[api]'`,
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
}

func logsRun(ctx context.Context, opts *LogsOptions) error {
	f := opts.f
	st, r, err := f.Run(ctx, opts.RunID)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	if opts.Stage != "" {
		for _, n := range r.Nodes {
			if n.ID == opts.Stage || n.Stage == opts.Stage {
				keep[n.ID] = true
			}
		}
		if len(keep) == 0 {
			return usageErrorf("run %s has no node or stage %q", r.ID, opts.Stage)
		}
	}
	lines, err := st.Logs(ctx, r.ID, "")
	if err != nil {
		return err
	}
	out := []pipeline.LogLine{}
	for _, l := range lines {
		if len(keep) == 0 || keep[l.Node] {
			out = append(out, l)
		}
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, out)
	}
	single := len(keep) == 1
	for _, l := range out {
		if single {
			fmt.Fprintln(f.IO.Out, l.Text)
		} else {
			fmt.Fprintf(f.IO.Out, "%s | %s\n", l.Node, l.Text)
		}
	}
	return nil
}
