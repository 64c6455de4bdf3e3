package engine

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// ApproveRequest lets waiting approval nodes of a run go on.
type ApproveRequest struct {
	RunID string
	Stage string // the node or stage; "" when exactly one node waits
	By    string
}

// Approved is what an approval recorded.
type Approved struct {
	RunID string    `json:"runId"`
	Nodes []string  `json:"approved"`
	By    string    `json:"by"`
	At    time.Time `json:"at"`
}

// Approve records who approved the waiting nodes, and when. It writes only
// the approval of nodes that still wait, so two approvals at once, or an
// approval beside the run's owner, change nothing else; Resume continues
// the run.
func (e *Engine) Approve(ctx context.Context, req ApproveRequest) (*Approved, error) {
	r, err := e.Store.Run(ctx, req.RunID)
	if err != nil {
		return nil, err
	}
	var waiting, match []*pipeline.Node
	for _, n := range r.Nodes {
		if n.Status != pipeline.Waiting {
			continue
		}
		waiting = append(waiting, n)
		if req.Stage == "" || n.ID == req.Stage || n.Stage == req.Stage {
			match = append(match, n)
		}
	}
	switch {
	case len(waiting) == 0:
		return nil, refusedf("run %s has no node waiting for approval (status %s)", r.ID, r.Status)
	case len(match) == 0:
		return nil, usagef("run %s: %q is not waiting; waiting: %s", r.ID, req.Stage, nodeIDs(waiting))
	case req.Stage == "" && len(match) > 1:
		return nil, usagef("run %s: several nodes wait (%s); name one", r.ID, nodeIDs(waiting))
	}
	a := &stages.Approval{By: req.By, At: e.now().UTC()}
	approved, err := e.Store.Approve(ctx, r.ID, pipeline.NodeIDs(match), a)
	if err != nil {
		return nil, err
	}
	if len(approved) == 0 {
		return nil, refusedf("run %s: %s no longer waits: another process went on with it", r.ID, nodeIDs(match))
	}
	return &Approved{RunID: r.ID, Nodes: approved, By: a.By, At: a.At}, nil
}

func nodeIDs(ns []*pipeline.Node) string { return strings.Join(pipeline.NodeIDs(ns), ", ") }

// CancelRequest stops a run for good.
type CancelRequest struct {
	RunID string
	By    string
}

// Cancel records a request that the run stop for good. The owner that
// executes the run observes it within a second, stops its in-flight nodes
// and records them cancelled; Cancel waits up to ten seconds for that. A
// run nobody executes (it waits, failed, or its owner died) is closed here,
// under a claim of its own. A cancelled run is never resumed.
func (e *Engine) Cancel(ctx context.Context, req CancelRequest, obs Observer) (*pipeline.Run, error) {
	r, err := e.Store.Run(ctx, req.RunID)
	if err != nil {
		return nil, err
	}
	if r.Status == pipeline.Succeeded || r.Status == pipeline.Skipped {
		return r, refusedf("run %s is already %s", r.ID, r.Status)
	}
	c := pipeline.Cancel{By: req.By, At: e.now().UTC()}
	if err := e.Store.RequestCancel(ctx, r.ID, c); err != nil {
		if errors.Is(err, pipeline.ErrAlreadyCancelled) {
			return r, refusedf("run %s is already cancelled", r.ID)
		}
		return r, err
	}
	owner := pipeline.NewOwner(r.ID)
	claim, err := e.Store.AcquireLease(ctx, pipeline.ClaimPrefix+r.ID, owner.Holder(), 30*time.Second)
	var held *pipeline.HeldError
	switch {
	case errors.As(err, &held):
		obs.notice("cancel requested; %s stops within a second", pipeline.ParseHolder(held.Holder))
		return e.waitCancelled(ctx, r.ID, 10*time.Second)
	case err != nil:
		return r, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pipeline.DefaultGrace)
		defer cancel()
		_ = e.Store.ReleaseLease(rctx, claim)
	}()
	if r, err = e.Store.Run(ctx, r.ID); err != nil {
		return nil, err
	}
	st := e.Store.Fenced(claim)
	var changed []*pipeline.Node
	for _, n := range r.Nodes {
		switch n.Status {
		case pipeline.Pending, pipeline.Waiting, pipeline.Running, pipeline.Interrupted, pipeline.Fenced:
			n.Status, n.Error = pipeline.Cancelled, "cancelled by "+c.By
			changed = append(changed, n)
		}
	}
	if err := st.SaveNodes(ctx, r.ID, changed...); err != nil {
		return r, err
	}
	now := e.now().UTC()
	r.Status, r.FinishedAt, r.Owner = pipeline.Cancelled, &now, owner.Holder()
	return r, st.SaveRun(ctx, r)
}

// waitCancelled waits for the owner of a run to record it cancelled.
func (e *Engine) waitCancelled(ctx context.Context, id string, limit time.Duration) (*pipeline.Run, error) {
	deadline := time.Now().Add(limit)
	for {
		r, err := e.Store.Run(ctx, id)
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
