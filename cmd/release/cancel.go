package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
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
	st, r, err := f.Run(ctx, opts.RunID)
	if err != nil {
		return err
	}
	if r.Status == pipeline.Succeeded || r.Status == pipeline.Skipped {
		return fmt.Errorf("run %s is already %s", r.ID, r.Status)
	}
	c := pipeline.Cancel{By: f.User(), At: time.Now().UTC()}
	if err := st.RequestCancel(ctx, r.ID, c); err != nil {
		if errors.Is(err, pipeline.ErrAlreadyCancelled) {
			return fmt.Errorf("run %s is already cancelled", r.ID)
		}
		return err
	}
	// Whoever owns the run observes the request within a second and stops.
	// A run nobody owns (it waits, failed, or its owner died) is closed
	// here, as its owner for a moment.
	owner := pipeline.NewOwner(r.ID)
	claim, err := st.AcquireLease(ctx, pipeline.ClaimPrefix+r.ID, owner.Holder(), 30*time.Second)
	var held *pipeline.HeldError
	switch {
	case errors.As(err, &held):
		fmt.Fprintf(f.IO.ErrOut, "cancel requested; %s stops within a second\n", pipeline.ParseHolder(held.Holder))
		r, err = waitCancelled(ctx, st, r.ID, 10*time.Second)
		if err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		defer st.ReleaseLease(context.WithoutCancel(ctx), claim)
		if r, err = st.Run(ctx, r.ID); err != nil {
			return err
		}
		fenced := st.Fenced(claim)
		var changed []*pipeline.Node
		for _, n := range r.Nodes {
			switch n.Status {
			case pipeline.Pending, pipeline.Waiting, pipeline.Running, pipeline.Interrupted, pipeline.Fenced:
				n.Status, n.Error = pipeline.Cancelled, "cancelled by "+c.By
				changed = append(changed, n)
			}
		}
		if err := fenced.SaveNodes(ctx, r.ID, changed...); err != nil {
			return err
		}
		now := time.Now().UTC()
		r.Status, r.FinishedAt, r.Owner = pipeline.Cancelled, &now, owner.Holder()
		if err := fenced.SaveRun(ctx, r); err != nil {
			return err
		}
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, newRunView(r))
	}
	fmt.Fprintf(f.IO.Out, "cancelled run %s\n", r.ID)
	return nil
}

// waitCancelled waits for the owner of a run to record it cancelled.
func waitCancelled(ctx context.Context, st pipeline.Store, id string, limit time.Duration) (*pipeline.Run, error) {
	deadline := time.Now().Add(limit)
	for {
		r, err := st.Run(ctx, id)
		if err != nil {
			return nil, err
		}
		if r.Status == pipeline.Cancelled || time.Now().After(deadline) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
