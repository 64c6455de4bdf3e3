package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// CancelOptions are the inputs of `release cancel`.
type CancelOptions struct {
	f     *Factory
	RunID string
}

// NewCmdCancel builds `release cancel`.
func NewCmdCancel(f *Factory, runF func(*CancelOptions) error) *cobra.Command {
	opts := &CancelOptions{f: f}
	return &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: nodes not yet done are cancelled, and it cannot be resumed",
		Long: `Cancel a run that has not succeeded. A run in progress in another process notices
within a second, stops its in-flight nodes through their context and records them
cancelled. A cancelled run is not resumed; start a new one.`,
		Example: `  release cancel 20261126-091500-3fa9c1`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RunID = args[0]
			if runF != nil {
				return runF(opts)
			}
			return cancelRun(cmd.Context(), opts)
		},
	}
}

func cancelRun(ctx context.Context, opts *CancelOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	r, err := e.Cancel(ctx, engine.CancelRequest{RunID: opts.RunID, By: f.User()}, f.watch().observer())
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, newRunView(r))
	}
	fmt.Fprintf(f.IO.Out, "cancelled run %s\n", r.ID)
	return nil
}
