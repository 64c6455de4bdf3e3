package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sweepboard/release/stages"
)

// Event is one status change of a node, for progress output.
type Event struct {
	RunID   string
	Node    string
	Status  Status
	Attempt int
	Err     string
	At      time.Time
}

// Executor runs the nodes of a run: every node whose needs have succeeded,
// up to Parallel at once, recording each status change in the store before
// anything that depends on it happens.
type Executor struct {
	Store    Store
	Parallel int // default: the number of CPUs
	WorkDir  string
	// Observe, when set, sees every status change, in order, from one
	// goroutine.
	Observe func(Event)
	// OnStart, when set, is called once the run holds its locks and is
	// recorded, before any node starts.
	OnStart func(*Run)
	// LogTo, when set, also receives every line the nodes log.
	LogTo  func(LogLine)
	Logger *slog.Logger
	Now    func() time.Time
	// PollCancel is how often the store is asked whether someone cancelled
	// the run (release cancel); default 1s.
	PollCancel time.Duration

	// Locks are the leases the run holds while it executes: one per
	// environment it touches ("env/staging"). They are taken in order
	// before any node starts, renewed every LeaseTTL/3, checked before
	// every node starts, and given up at the end.
	Locks    []string
	LeaseTTL time.Duration // default DefaultLeaseTTL
	// Wait makes a held lock a wait instead of a *HeldError.
	Wait bool
}

// DefaultLeaseTTL is how long a lock outlives a run that stopped renewing
// it (a SIGKILL): at most this long.
const DefaultLeaseTTL = 15 * time.Second

// ErrLockLost is returned when the run lost one of its locks while it ran:
// nothing new started after that, and the run can be resumed.
var ErrLockLost = errors.New("lost the environment lock")

// FailedError is the error of a run in which nodes failed. It names only
// the root causes: nodes skipped because of them are not listed.
type FailedError struct {
	RunID string
	Nodes []*Node // failed, in graph order
}

func (e *FailedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s failed", e.RunID)
	for _, n := range e.Nodes {
		fmt.Fprintf(&b, "\n  %s: %s", n.ID, n.Error)
	}
	return b.String()
}

// WaitingError is the error of a run that stopped at approval gates.
type WaitingError struct {
	RunID string
	Nodes []string
}

func (e *WaitingError) Error() string {
	return fmt.Sprintf("run %s waits for approval of %s", e.RunID, strings.Join(e.Nodes, ", "))
}

// ErrInterrupted is returned when the context was cancelled under a run
// (a signal): in-flight nodes were cancelled and the run can be resumed.
var ErrInterrupted = errors.New("interrupted")

// ErrCancelled is returned when someone cancelled the run (release cancel).
var ErrCancelled = errors.New("run cancelled")

type result struct {
	id      string
	attempt int // > 0: an attempt is starting; 0: the node is done
	out     stages.Outputs
	err     error
	// checkpoint, when set, is a stage's Checkpoint: out is merged into the
	// node's outputs and saved, then checkpoint receives the store's answer.
	checkpoint chan error
}

// Execute runs every node of run that has not succeeded yet, the stages
// taken from p and the edges from plan. Outputs of nodes that already
// succeeded (a resumed run) are reused, not recomputed.
func (x *Executor) Execute(ctx context.Context, p *Pipeline, plan *Plan, run *Run) error {
	return x.execute(ctx, p, plan, run, false)
}

// Start records a new run and executes it. The run is recorded only once
// its locks are held: a run refused by a lock leaves no trace.
func (x *Executor) Start(ctx context.Context, p *Pipeline, plan *Plan, run *Run) error {
	return x.execute(ctx, p, plan, run, true)
}

func (x *Executor) execute(ctx context.Context, p *Pipeline, plan *Plan, run *Run, create bool) error {
	now := x.Now
	if now == nil {
		now = time.Now
	}
	parallel := x.Parallel
	if parallel <= 0 {
		parallel = runtime.NumCPU()
	}
	logger := x.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	emit := func(n *Node) {
		if x.Observe != nil {
			x.Observe(Event{RunID: run.ID, Node: n.ID, Status: n.Status, Attempt: n.Attempts, Err: n.Error, At: now()})
		}
	}

	// The plan decides which nodes of the record run: after a change of
	// the pipeline file (resume --allow-changed) it may be fewer.
	nodes := make(map[string]*Node, len(plan.Nodes))
	var reset []*Node
	for _, pn := range plan.Nodes {
		n := run.Node(pn.ID)
		if n == nil {
			return fmt.Errorf("run %s has no node %s: the plan changed", run.ID, pn.ID)
		}
		nodes[n.ID] = n
		if n.Status != Succeeded && n.Status != Pending {
			n.Status, n.Error, n.FinishedAt = Pending, "", nil
			reset = append(reset, n)
		}
	}
	if run.Images == nil {
		run.Images = map[string]string{}
	}
	locks, err := x.acquire(ctx, run.ID)
	if err != nil {
		return err
	}
	defer locks.release()
	if create {
		if err := x.Store.CreateRun(ctx, run); err != nil {
			return err
		}
	}
	if x.OnStart != nil {
		x.OnStart(run)
	}
	run.Status, run.FinishedAt = Running, nil
	if err := x.Store.SaveRun(ctx, run); err != nil {
		return err
	}
	if err := x.Store.SaveNodes(ctx, run.ID, reset...); err != nil {
		return err
	}

	// Records are written with a context that survives the signal: the
	// record must say where the run stopped.
	wctx := context.WithoutCancel(ctx)
	nodeCtx, cancelNodes := context.WithCancel(wctx)
	defer cancelNodes()
	results := make(chan result)
	running := 0
	var failed, waiting []string
	interrupted, cancelled, lockLost := false, false, false
	poll := x.PollCancel
	if poll <= 0 {
		poll = time.Second
	}
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	succeeded := func(id string) bool { return nodes[id].Status == Succeeded }
	// ready holds the pending nodes whose needs have all succeeded, in
	// graph order. It starts from the graph's answer for the recorded
	// state and grows as nodes succeed, looking only at their users.
	ready := plan.Graph.Ready(succeeded)
	addUsers := func(id string) {
		for _, u := range plan.Graph.Users(id) {
			if nodes[u].Status != Pending || !allOf(plan.Graph.Needs(u), succeeded) {
				continue
			}
			i, _ := slices.BinarySearchFunc(ready, u, func(a, b string) int { return plan.Graph.Index(a) - plan.Graph.Index(b) })
			ready = slices.Insert(ready, i, u)
		}
	}

	// Each turn of the loop commits one batch of status changes (nodes that
	// finished, were skipped, or start now) in one transaction, and only
	// then starts the new nodes: a node never starts before the record of
	// everything it depends on is durable, and a burst of finishing nodes
	// costs one commit, not one each.
	var batch, deployed []*Node
	imagesChanged := false
	released := false
	handle := func(res result) {
		n := nodes[res.id]
		if res.checkpoint != nil {
			if n.Outputs == nil {
				n.Outputs = stages.Outputs{}
			}
			maps.Copy(n.Outputs, res.out)
			res.checkpoint <- x.Store.SaveNodes(wctx, run.ID, n)
			return
		}
		if res.attempt > 0 {
			n.Attempts = res.attempt
			batch = append(batch, n)
			return
		}
		running--
		batch = append(batch, x.finish(run, n, res, now, nodeCtx)...)
		switch n.Status {
		case Succeeded:
			imagesChanged = imagesChanged || (n.Item != "" && n.Outputs["image"] != "")
			addUsers(n.ID)
			if d, ok := p.Stages[n.Stage].Impl.(stages.Deployer); ok && d.DeploysRelease() && n.Environment != "" {
				deployed = append(deployed, n)
			}
		case Failed:
			failed = append(failed, n.ID)
			for _, d := range plan.Graph.Downstream(n.ID) {
				if dn := nodes[d]; dn.Status == Pending {
					dn.Status, dn.Error = Skipped, "upstream "+n.ID+" failed"
					batch = append(batch, dn)
				}
			}
		case Waiting:
			waiting = append(waiting, n.ID)
		}
	}
	for {
		var started []*Node
		if len(failed) == 0 && !interrupted && !cancelled {
			for len(ready) > 0 && running < parallel {
				n := nodes[ready[0]]
				ready = ready[1:]
				if n.Status != Pending {
					continue
				}
				t := now().UTC()
				n.Status, n.Attempts, n.StartedAt, n.FinishedAt, n.Error = Running, n.Attempts+1, &t, nil, ""
				started = append(started, n)
				running++
			}
		}
		blocked := false
		if len(started) > 0 && locks.held() {
			// Fencing: confirm the locks with the store before anything
			// new starts; a failed confirmation leaves them unconfirmed.
			_ = locks.fence(wctx)
		}
		if len(started) > 0 && !locks.valid() {
			// Fencing: a run that is not sure of its locks starts nothing.
			// It waits for a renewal to get through, and stops when the
			// locks are lost or expired.
			for _, n := range started {
				n.Status, n.Attempts, n.StartedAt = Pending, n.Attempts-1, nil
				running--
			}
			ready = append(nodeIDList(started), ready...)
			started = nil
			if locks.over() {
				lockLost = true
				cancelNodes()
			} else {
				blocked = true
			}
		}
		batch = append(batch, started...)
		if imagesChanged {
			if err := x.Store.SaveRun(wctx, run); err != nil {
				cancelNodes()
				return err
			}
			imagesChanged = false
			// The release record is written once, when every service has
			// its pushed digest.
			if n := len(p.Spec.Services); n > 0 && len(run.Images) >= n && !released {
				rel := &Release{Version: run.Version, Pipeline: run.Pipeline, RunID: run.ID, Commits: run.Commits, Images: run.Images, CreatedAt: now().UTC()}
				if err := x.Store.RecordRelease(wctx, rel); err != nil {
					cancelNodes()
					return err
				}
				released = true
			}
		}
		for _, n := range deployed {
			// A crash between this record and the node's succeeded status
			// makes the resumed run deploy again: the history already has
			// it once.
			if last, err := x.Store.Deployments(wctx, n.Environment, 1); err == nil && len(last) == 1 &&
				last[0].RunID == run.ID && last[0].Version == run.Version && maps.Equal(last[0].Images, run.Images) {
				continue
			}
			d := &Deployment{Environment: n.Environment, Version: run.Version, RunID: run.ID, Kind: run.Kind, Images: run.Images, At: now().UTC()}
			if err := x.Store.RecordDeployment(wctx, d); err != nil {
				cancelNodes()
				return err
			}
		}
		deployed = deployed[:0]
		if len(batch) > 0 {
			if err := x.Store.SaveNodes(wctx, run.ID, batch...); err != nil {
				cancelNodes()
				return err
			}
			for _, n := range batch {
				emit(n)
			}
			batch = batch[:0]
		}
		for _, n := range started {
			env := x.env(p, run, n, nodes, logger)
			env.Fence = locks.fence
			env.LeaseExpiry = locks.expiry
			env.Checkpoint = checkpointer(n.ID, results)
			pn, _ := plan.Node(n.ID)
			go x.runNode(nodeCtx, p.Stages[pn.Stage], env, n.Attempts, results)
		}
		if running == 0 && !blocked {
			break
		}
		select {
		case res := <-results:
			handle(res)
		drain:
			for {
				select {
				case res := <-results:
					handle(res)
				default:
					break drain
				}
			}
		case <-ctx.Done():
			if !interrupted {
				interrupted = true
				cancelNodes()
			}
		case <-locks.lost:
			locks.lost = nil
			if !lockLost {
				lockLost = true
				cancelNodes()
			}
		case <-ticker.C:
			if cancelled {
				continue
			}
			if r, err := x.Store.Run(wctx, run.ID); err == nil && r.Status == Cancelled {
				cancelled = true
				cancelNodes()
			}
		}
	}
	if lockLost && !interrupted && !cancelled {
		interrupted = true // recorded as a stop: resumable
	}
	err = x.close(ctx, run, nodes, failed, waiting, interrupted, cancelled, now)
	if lockLost && errors.Is(err, ErrInterrupted) {
		return fmt.Errorf("run %s: %w; resume it when the lock is free", run.ID, ErrLockLost)
	}
	return err
}

// checkpointer is a node's Checkpoint: it hands the outputs to the
// executor's loop, which records them, and waits for the record.
func checkpointer(id string, results chan<- result) func(context.Context, stages.Outputs) error {
	return func(ctx context.Context, out stages.Outputs) error {
		ack := make(chan error, 1)
		select {
		case results <- result{id: id, out: maps.Clone(out), checkpoint: ack}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-ack:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func nodeIDList(ns []*Node) []string {
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

func allOf(ids []string, ok func(string) bool) bool {
	for _, id := range ids {
		if !ok(id) {
			return false
		}
	}
	return true
}

// finish records a node's result; it returns the nodes to save.
func (x *Executor) finish(run *Run, n *Node, res result, now func() time.Time, nodeCtx context.Context) []*Node {
	t := now().UTC()
	n.FinishedAt = &t
	if res.out != nil {
		if n.Outputs == nil {
			n.Outputs = stages.Outputs{}
		}
		maps.Copy(n.Outputs, res.out)
	}
	switch {
	case res.err == nil:
		n.Status, n.Error = Succeeded, ""
		if img := n.Outputs["image"]; img != "" && n.Item != "" {
			run.Images[n.Item] = img
		}
	case errors.Is(res.err, stages.ErrWaiting):
		n.Status, n.Error, n.FinishedAt = Waiting, "", nil
	case nodeCtx.Err() != nil:
		n.Status, n.Error = Cancelled, "cancelled: "+res.err.Error()
	default:
		n.Status, n.Error = Failed, res.err.Error()
	}
	return []*Node{n}
}

func (x *Executor) close(ctx context.Context, run *Run, nodes map[string]*Node, failed, waiting []string, interrupted, cancelled bool, now func() time.Time) error {
	// A signal or a cancel stops the run: whatever was still pending is
	// cancelled too, so the record says why it did not run.
	var changed []*Node
	if interrupted || cancelled {
		for _, n := range nodes {
			if n.Status == Pending {
				n.Status, n.Error = Cancelled, "run stopped before this node started"
				changed = append(changed, n)
			}
		}
	}
	// Flush with a context that survives the signal: the record must say
	// where the run stopped.
	wctx := context.WithoutCancel(ctx)
	if err := x.Store.SaveNodes(wctx, run.ID, changed...); err != nil {
		return err
	}
	t := now().UTC()
	var result error
	switch {
	case interrupted:
		run.Status, result = Cancelled, ErrInterrupted
	case cancelled:
		run.Status, result = Cancelled, ErrCancelled
	case len(failed) > 0:
		run.Status = Failed
		fe := &FailedError{RunID: run.ID}
		for _, n := range run.Nodes {
			if n.Status == Failed && nodes[n.ID] != nil {
				fe.Nodes = append(fe.Nodes, n)
			}
		}
		result = fe
	case len(waiting) > 0:
		run.Status, result = Waiting, &WaitingError{RunID: run.ID, Nodes: waiting}
	default:
		run.Status = Succeeded
		for _, n := range nodes {
			if n.Status != Succeeded {
				run.Status = Failed // a node the plan does not reach; should not happen
				result = fmt.Errorf("run %s: node %s did not run", run.ID, n.ID)
			}
		}
	}
	if run.Status != Waiting {
		run.FinishedAt = &t
	}
	if err := x.Store.SaveRun(wctx, run); err != nil {
		return errors.Join(result, err)
	}
	return result
}

// env builds the read-only run data of one node.
func (x *Executor) env(p *Pipeline, run *Run, n *Node, nodes map[string]*Node, logger *slog.Logger) *stages.Env {
	inputs := make(map[string]stages.Outputs, len(n.Needs))
	for _, need := range n.Needs {
		if up := nodes[need]; up != nil {
			inputs[need] = maps.Clone(up.Outputs)
		}
	}
	var approval *stages.Approval
	if n.Approval != nil {
		a := *n.Approval
		approval = &a
	}
	return &stages.Env{
		RunID:       run.ID,
		RunKind:     run.Kind,
		Version:     run.Version,
		Node:        n.ID,
		Stage:       n.Stage,
		Item:        n.Item,
		Environment: n.Environment,
		Attempt:     n.Attempts,
		Spec:        p.Spec,
		WorkDir:     x.WorkDir,
		Commits:     maps.Clone(run.Commits),
		Inputs:      inputs,
		Images:      maps.Clone(run.Images),
		Approval:    approval,
		Prior:       maps.Clone(n.Outputs),
		Log:         &logWriter{store: x.Store, runID: run.ID, node: n.ID, tee: x.LogTo, now: time.Now},
		Logger:      logger.With("node", n.ID),
	}
}

// runNode runs one node with its retries and timeout and sends the result.
func (x *Executor) runNode(ctx context.Context, st *Stage, env *stages.Env, firstAttempt int, results chan<- result) {
	attempts := max(st.Retry.Attempts, 1)
	backoff := st.Retry.Backoff
	var out stages.Outputs
	var err error
	for a := firstAttempt; ; a++ {
		if a > firstAttempt {
			results <- result{id: env.Node, attempt: a}
		}
		env.Attempt = a
		out, err = x.attempt(ctx, st, env)
		if err == nil || errors.Is(err, stages.ErrWaiting) || stages.IsPermanent(err) || ctx.Err() != nil {
			break
		}
		if a-firstAttempt+1 >= attempts {
			break
		}
		fmt.Fprintf(env.Log, "attempt %d failed: %v; retrying in %s\n", a, err, backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		backoff *= 2
	}
	if lw, ok := env.Log.(*logWriter); ok {
		lw.Flush()
	}
	results <- result{id: env.Node, out: out, err: err}
}

func (x *Executor) attempt(ctx context.Context, st *Stage, env *stages.Env) (out stages.Outputs, err error) {
	if st.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, st.Timeout)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("stage %s panicked: %v", st.Uses, r)
		}
	}()
	out, err = st.Impl.Run(ctx, env)
	if err != nil && st.Timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", st.Timeout, err)
	}
	return out, err
}
