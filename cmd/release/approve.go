package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// ApproveOptions are the inputs of `release approve`.
type ApproveOptions struct {
	f     *Factory
	RunID string
	Stage string
}

// NewCmdApprove builds `release approve`.
func NewCmdApprove(f *Factory, runF func(*ApproveOptions) error) *cobra.Command {
	opts := &ApproveOptions{f: f}
	return &cobra.Command{
		Use:   "approve RUN [STAGE]",
		Short: "Approve a waiting gate of a run; resume continues it",
		Long: `Record who approved a waiting approval node of a run, and when. STAGE may be left
out when exactly one node waits. The approver is RELEASE_USER, or the login name.
Continue the run with release resume RUN.`,
		Example: `  release approve 20261126-091500-3fa9c1
  RELEASE_USER=alice release approve 20261126-0915 prod-gate && release resume 20261126-0915`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RunID = args[0]
			if len(args) > 1 {
				opts.Stage = args[1]
			}
			if runF != nil {
				return runF(opts)
			}
			return approveRun(cmd.Context(), opts)
		},
	}
}

func approveRun(ctx context.Context, opts *ApproveOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	a, err := e.Approve(ctx, engine.ApproveRequest{RunID: opts.RunID, Stage: opts.Stage, By: f.User()})
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, a)
	}
	fmt.Fprintf(f.IO.Out, "approved %s of run %s by %s\n", strings.Join(a.Nodes, ", "), a.RunID, a.By)
	fmt.Fprintf(f.IO.ErrOut, "continue with: release resume %s\n", a.RunID)
	return nil
}
