package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// ApproveOptions are the inputs of `release approve`.
type ApproveOptions struct {
	f     *Factory
	RunID string
	Stage string
	// approved, when set, sees what was approved (the server answers with
	// it rather than parsing the output).
	approved func(runID string, nodes []string, a *stages.Approval)
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
	st, r, err := f.Run(ctx, opts.RunID)
	if err != nil {
		return err
	}
	var waiting, match []*pipeline.Node
	for _, n := range r.Nodes {
		if n.Status != pipeline.Waiting {
			continue
		}
		waiting = append(waiting, n)
		if opts.Stage == "" || n.ID == opts.Stage || n.Stage == opts.Stage {
			match = append(match, n)
		}
	}
	switch {
	case len(waiting) == 0:
		return fmt.Errorf("run %s has no node waiting for approval (status %s)", r.ID, r.Status)
	case len(match) == 0:
		return usageErrorf("run %s: %q is not waiting; waiting: %s", r.ID, opts.Stage, nodeIDs(waiting))
	case opts.Stage == "" && len(match) > 1:
		return usageErrorf("run %s: several nodes wait (%s); name one", r.ID, nodeIDs(waiting))
	}
	a := &stages.Approval{By: f.User(), At: time.Now().UTC()}
	approved, err := st.Approve(ctx, r.ID, nodeIDList(match), a)
	if err != nil {
		return err
	}
	if len(approved) == 0 {
		return fmt.Errorf("run %s: %s no longer waits: another process went on with it", r.ID, nodeIDs(match))
	}
	if opts.approved != nil {
		opts.approved(r.ID, approved, a)
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, map[string]any{"runId": r.ID, "approved": approved, "by": a.By, "at": a.At})
	}
	fmt.Fprintf(f.IO.Out, "approved %s of run %s by %s\n", strings.Join(approved, ", "), r.ID, a.By)
	fmt.Fprintf(f.IO.ErrOut, "continue with: release resume %s\n", r.ID)
	return nil
}

func nodeIDList(ns []*pipeline.Node) []string {
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

func nodeIDs(ns []*pipeline.Node) string { return strings.Join(nodeIDList(ns), ", ") }
