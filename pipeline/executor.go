package pipeline

import (
	"cmp"
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
	// Grace is how long a run that stops (a signal, a store that failed a
	// write, leases lost) gives its nodes to stop and the store to record
	// where it stopped; default DefaultGrace. The final records get at
	// least half a second more. What is not recorded by then is named in
	// an *UnrecordedError, and the run is resumed from its record.
	Grace time.Duration
}

// DefaultLeaseTTL is how long a lock outlives a run that stopped renewing
// it (a SIGKILL): at most this long.
const DefaultLeaseTTL = 15 * time.Second

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

// WaitingError is the error of a run that stopped at approval gates or at
// freeze windows.
type WaitingError struct {
	RunID string
	Nodes []string
	// Frozen are the nodes among Nodes that wait for a freeze window to
	// end, with the reason; the others wait for an approval.
	Frozen map[string]string
}

func (e *WaitingError) Error() string {
	var gates, frozen []string
	for _, n := range e.Nodes {
		if r, ok := e.Frozen[n]; ok {
			frozen = append(frozen, n+" ("+r+")")
		} else {
			gates = append(gates, n)
		}
	}
	var parts []string
	if len(gates) > 0 {
		parts = append(parts, "approval of "+strings.Join(gates, ", "))
	}
	if len(frozen) > 0 {
		parts = append(parts, "the end of a freeze: "+strings.Join(frozen, "; "))
	}
	return fmt.Sprintf("run %s waits for %s", e.RunID, strings.Join(parts, ", and "))
}

// ErrInterrupted is returned when the context was cancelled under a run
// (a signal): in-flight nodes were interrupted and the run can be resumed.
var ErrInterrupted = errors.New("interrupted")

// CancelledError is returned when someone cancelled the run (release
// cancel), and by a resume of a cancelled run: it is never resumed.
type CancelledError struct {
	RunID string
	By    string
}

func (e *CancelledError) Error() string {
	return fmt.Sprintf("run %s was cancelled by %s; a cancelled run is not resumed: start a new one", e.RunID, cmp.Or(e.By, "someone"))
}

// FencedError is returned when the owner lost its claim on the run or a
// lease of one of its environments while it ran: its in-flight nodes were
// stopped, nothing new started, and another owner may resume the run.
type FencedError struct {
	RunID string
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("run %s: lost its lease (it expired or another owner took it); in-flight nodes were stopped: %v", e.RunID, stages.ErrFenced)
}

func (e *FencedError) Unwrap() error { return stages.ErrFenced }

// DoneError is returned by a resume of a run that has already succeeded,
// perhaps by another owner while this one waited for the claim.
type DoneError struct {
	RunID string
}

func (e *DoneError) Error() string {
	return fmt.Sprintf("run %s already succeeded; nothing to resume", e.RunID)
}

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

	// interrupted is err, said to be ErrInterrupted when a signal (ctx)
	// ended the call that failed.
	interrupted := func(err error) error {
		if err != nil && ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
			return fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		return err
	}

	// 1. Claim the run and lock its environments, as a fresh owner. A
	// second claimant gets a *HeldError naming this owner, or waits.
	owner := NewOwner(run.ID)
	locks, err := x.acquire(ctx, owner.Holder(), run.ID)
	if err != nil {
		return interrupted(err)
	}
	// The leases are given back at the end, within the grace of a stop.
	locksFreed, leasesKept := false, false
	freeLocks := func(rctx context.Context) {
		if !locksFreed {
			locksFreed = true
			leasesKept = !locks.release(rctx)
		}
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.grace())
		defer cancel()
		freeLocks(rctx)
	}()
	// Every write from here on commits only while the claim is ours.
	st := x.Store.Fenced(locks.claim)
	// recorded says the run is in the store: a failure from here on
	// leaves it to a resume.
	recorded := !create
	unrecorded := func(err error) error {
		err = interrupted(err)
		if err == nil || !recorded {
			return err
		}
		var se *StoreError
		ue := &UnrecordedError{RunID: run.ID, LeaseTTL: x.leaseTTL(), Err: err}
		if errors.As(err, &se) {
			ue.Store = se
		}
		return ue
	}

	// 2. A run that existed is read again now that it is ours: another
	// owner may have finished it, someone may have cancelled it, or
	// approved one of its gates, while this one waited for the claim.
	if !create {
		fresh, err := x.Store.Run(ctx, run.ID)
		if err != nil {
			return unrecorded(err)
		}
		switch {
		case fresh.Status == Succeeded:
			*run = *fresh
			return &DoneError{RunID: run.ID}
		case fresh.Cancel != nil:
			*run = *fresh
			return &CancelledError{RunID: run.ID, By: fresh.Cancel.By}
		}
		fresh.PlanHash = run.PlanHash
		if run.Override != nil {
			fresh.Override = run.Override
		}
		*run = *fresh
	}
	previous := ParseHolder(run.Owner)
	run.Owner = owner.Holder()

	// The plan decides which nodes of the record run: after a change of
	// the pipeline file (resume --allow-changed) it may be fewer. A node
	// still running in the record belonged to an owner that is gone: its
	// attempt is recorded as fenced before the node is made pending again.
	nodes := make(map[string]*Node, len(plan.Nodes))
	var fenced, reset []*Node
	for _, pn := range plan.Nodes {
		n := run.Node(pn.ID)
		if n == nil {
			return fmt.Errorf("run %s has no node %s: the plan changed", run.ID, pn.ID)
		}
		nodes[n.ID] = n
		if n.Status == Running {
			t := now().UTC()
			n.Status, n.Error, n.FinishedAt = Fenced, fmt.Sprintf("attempt %d fenced: its owner %s stopped without finishing it", n.Attempts, previous), &t
			fenced = append(fenced, n)
		}
	}
	if run.Images == nil {
		run.Images = map[string]string{}
	}
	if create {
		if err := st.CreateRun(ctx, run); err != nil {
			return interrupted(err)
		}
		recorded = true
	}
	if x.OnStart != nil {
		x.OnStart(run)
	}
	run.Status, run.FinishedAt = Running, nil
	if err := st.SaveRun(ctx, run); err != nil {
		return unrecorded(err)
	}
	if len(fenced) > 0 {
		if err := st.SaveNodes(ctx, run.ID, fenced...); err != nil {
			return unrecorded(err)
		}
		for _, n := range fenced {
			emit(n)
		}
	}
	for _, n := range nodes {
		if n.Status != Succeeded && n.Status != Pending {
			n.Status, n.Error, n.FinishedAt = Pending, "", nil
			reset = append(reset, n)
		}
	}
	if err := st.SaveNodes(ctx, run.ID, reset...); err != nil {
		return unrecorded(err)
	}

	// 3. Run the ready nodes. Records are written with a context that
	// survives the signal (the record must say where the run stopped), for
	// a grace: once the run stops for a signal, a write the store did not
	// take, or leases lost, its nodes have x.grace() to stop and the store
	// to take their statuses. What it did not take by then is named in an
	// *UnrecordedError; a store that does not answer cannot hold the exit.
	g := newGrace(ctx, x.grace())
	defer g.cancel()
	defer context.AfterFunc(ctx, g.start)()
	wctx := g.ctx
	nodeCtx, cancelNodes := context.WithCancelCause(wctx)
	defer cancelNodes(nil)
	// A signal stops the nodes at once, whatever the loop waits for: a
	// write the store does not answer can hold it.
	defer context.AfterFunc(ctx, func() { cancelNodes(nil) })()
	// Losing the leases stops the nodes at once, whatever the loop waits
	// for: a store that does not answer can hold it in a write.
	lost := locks.lost
	go func(lost <-chan struct{}) {
		select {
		case <-lost:
			cancelNodes(stages.ErrFenced)
		case <-nodeCtx.Done():
		}
	}(lost)
	results := make(chan result)
	running := 0
	var failed, waiting []string
	frozen := map[string]string{}
	// stop is why the run stops early: Interrupted (a signal), Cancelled
	// (someone asked), Fenced (a lease lost); "" while it goes on.
	var stop Status
	stopWith := func(s Status) {
		if stop == "" {
			stop = s
			cancelNodes(nil)
		}
		if s != Cancelled {
			g.start()
		}
	}
	// unsaved are the nodes whose last change the store did not take.
	unsaved := map[string]*Node{}
	// Cancel requests are read off the loop, for the same reason.
	cancelled := make(chan *Cancel, 1)
	go x.pollCancel(nodeCtx, run.ID, cancelled)
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
	var rolledBack []rollback
	imagesChanged := false
	released := false
	handle := func(res result) {
		n := nodes[res.id]
		if res.checkpoint != nil {
			if n.Progress == nil {
				n.Progress = stages.Outputs{}
			}
			maps.Copy(n.Progress, res.out)
			bctx, cancel := x.bounded(wctx)
			res.checkpoint <- st.SaveNodes(bctx, run.ID, n)
			cancel()
			return
		}
		if res.attempt > 0 {
			n.Attempts = res.attempt
			batch = append(batch, n)
			return
		}
		running--
		if errors.Is(context.Cause(nodeCtx), stages.ErrFenced) {
			stopWith(Fenced) // before the loop saw the leases lost
		}
		batch = append(batch, x.finish(run, n, res, now, nodeCtx, stop)...)
		switch n.Status {
		case Succeeded:
			imagesChanged = imagesChanged || (n.Item != "" && n.Outputs["image"] != "")
			addUsers(n.ID)
			if d, ok := p.Stages[n.Stage].Impl.(stages.Deployer); ok && d.DeploysRelease() && n.Environment != "" {
				deployed = append(deployed, n)
			}
		case Failed:
			failed = append(failed, n.ID)
			var rb *stages.RolledBack
			if d, ok := p.Stages[n.Stage].Impl.(stages.Deployer); ok && d.DeploysRelease() && n.Environment != "" && errors.As(res.err, &rb) {
				deployed = append(deployed, n)
				rolledBack = append(rolledBack, rollback{n.Environment, rb})
			}
			for _, d := range plan.Graph.Downstream(n.ID) {
				if dn := nodes[d]; dn.Status == Pending {
					dn.Status, dn.Error = Skipped, "upstream "+n.ID+" failed"
					batch = append(batch, dn)
				}
			}
		case Waiting:
			waiting = append(waiting, n.ID)
		case Fenced:
			stopWith(Fenced)
		}
	}
	var werr error // a write that failed: the run stops
	for {
		if ctx.Err() != nil {
			// A signal that came while the loop waited for a write.
			stopWith(Interrupted)
		}
		var started []*Node
		if len(failed) == 0 && stop == "" && werr == nil {
			for len(ready) > 0 && running < parallel {
				n := nodes[ready[0]]
				ready = ready[1:]
				if n.Status != Pending {
					continue
				}
				// Freeze windows are checked where they act: before each
				// node of an environment, unless the run's override names
				// the window.
				if reason := x.frozen(p, run, n, now()); reason != "" {
					n.Status, n.Error = Waiting, reason
					frozen[n.ID] = reason
					waiting = append(waiting, n.ID)
					batch = append(batch, n)
					continue
				}
				t := now().UTC()
				n.Status, n.Attempts, n.StartedAt, n.FinishedAt, n.Error = Running, n.Attempts+1, &t, nil, ""
				started = append(started, n)
				running++
			}
		}
		blocked := false
		if len(started) > 0 {
			// Fencing: confirm the leases with the store before anything
			// new starts; a failed confirmation leaves them unconfirmed.
			_ = locks.fence(wctx)
		}
		if len(started) > 0 && !locks.valid() {
			// A run that is not sure of its leases starts nothing. It
			// waits for a renewal to get through, and stops when they are
			// lost or expired.
			for _, n := range started {
				n.Status, n.Attempts, n.StartedAt = Pending, n.Attempts-1, nil
				running--
			}
			ready = append(NodeIDs(started), ready...)
			started = nil
			if locks.over() {
				stopWith(Fenced)
			} else {
				blocked = true
			}
		}
		batch = append(batch, started...)
		if werr == nil {
			bctx, cancel := x.bounded(wctx)
			werr = x.record(bctx, st, p, run, &imagesChanged, &released, deployed, now)
			if werr == nil {
				werr = x.recordRollbacks(bctx, st, run, rolledBack, now)
			}
			cancel()
		}
		deployed, rolledBack = deployed[:0], rolledBack[:0]
		if len(batch) > 0 {
			if werr == nil {
				bctx, cancel := x.bounded(wctx)
				werr = st.SaveNodes(bctx, run.ID, batch...)
				cancel()
			}
			for _, n := range batch {
				if werr == nil {
					delete(unsaved, n.ID)
					emit(n)
				} else {
					unsaved[n.ID] = n
				}
			}
		}
		batch = batch[:0]
		if werr != nil {
			// Nothing new starts; what runs is stopped and awaited.
			for _, n := range started {
				n.Status, n.Attempts, n.StartedAt = Pending, n.Attempts-1, nil
				running--
			}
			started = nil
			if errors.Is(werr, ErrLeaseLost) {
				stopWith(Fenced)
			} else {
				stopWith(Interrupted)
			}
		}
		for _, n := range started {
			env := x.env(wctx, p, run, n, nodes, logger)
			env.Fence = locks.fence
			env.LeaseExpiry = locks.safeUntil
			env.Checkpoint = checkpointer(n.ID, results)
			pn, _ := plan.Node(n.ID)
			go x.runNode(nodeCtx, p.Stages[pn.Stage], env, n.Attempts, results)
		}
		if running == 0 && !blocked {
			break
		}
		if wctx.Err() != nil {
			// The grace ran out with nodes still running: their stages did
			// not stop in time. They are left to end with the process.
			go drain(results, running)
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
			stopWith(Interrupted)
		case <-lost:
			lost = nil
			stopWith(Fenced)
		case c := <-cancelled:
			if stop == "" {
				run.Cancel = c
				stopWith(Cancelled)
			}
		case <-wctx.Done():
		}
	}
	for _, n := range nodes {
		if n.Status == Running { // left behind when the grace ran out
			t := now().UTC()
			n.Status, n.Error, n.FinishedAt = Interrupted, fmt.Sprintf("interrupted: its stage did not stop within %s of the run's stop", x.grace()), &t
			unsaved[n.ID] = n
		}
	}

	// 4. Record where the run ended, and give the leases back: after a
	// stop, within what is left of the grace.
	fctx, cancel := x.bounded(wctx)
	if g.started() || ctx.Err() != nil {
		cancel()
		fctx, cancel = g.last()
	}
	defer cancel()
	rec, result := x.close(fctx, st, run, nodes, unsaved, failed, waiting, frozen, stop, now)
	freeLocks(fctx)
	if stop == Fenced {
		// The record is no longer ours to write: the next owner records
		// this attempt as fenced when it claims the run.
		return &FencedError{RunID: run.ID}
	}
	if werr != nil && ctx.Err() == nil {
		result = werr // the run stopped because the store failed
	}
	if werr == nil && len(rec.nodes) == 0 && !rec.run {
		// All recorded. Leases the store did not take back lapse.
		return result
	}
	if result == nil {
		result = rec.err // it succeeded, but the record does not say so
	}
	ue := &UnrecordedError{RunID: run.ID, LeaseTTL: x.leaseTTL(), Leases: leasesKept, Store: rec.err, Err: result}
	if ue.Store == nil {
		ue.Store = werr
	}
	for _, n := range rec.nodes {
		ue.Nodes = append(ue.Nodes, n.ID+" "+string(n.Status))
	}
	if rec.run {
		ue.Run = run.Status
	}
	return ue
}

// drain takes the results of nodes left running when the grace ran out, so
// that their goroutines end when their stages return.
func drain(results <-chan result, running int) {
	for running > 0 {
		res := <-results
		switch {
		case res.checkpoint != nil:
			res.checkpoint <- ErrInterrupted
		case res.attempt == 0:
			running--
		}
	}
}

// pollCancel asks the store every PollCancel whether someone cancelled run
// id, until ctx ends, and sends the first request it finds. Each read
// gives up after a while: the next one tries again.
func (x *Executor) pollCancel(ctx context.Context, id string, found chan<- *Cancel) {
	every := x.PollCancel
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		r, err := x.Store.Run(rctx, id)
		cancel()
		if err == nil && r.Cancel != nil {
			found <- r.Cancel
			return
		}
	}
}

// bounded is the context of one record write within ctx (the execution's
// writes, which survive a signal for a grace): it gives up after the lease
// TTL, by when the leases the write relies on are lost anyway, so that a
// store that does not answer cannot hold the run for ever.
func (x *Executor) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, x.leaseTTL())
}

func (x *Executor) leaseTTL() time.Duration {
	if x.LeaseTTL <= 0 {
		return DefaultLeaseTTL
	}
	return x.LeaseTTL
}

// frozen is the reason node n may not start now: a freeze window covers
// its environment and the run's override does not name it; "" otherwise.
func (x *Executor) frozen(p *Pipeline, run *Run, n *Node, t time.Time) string {
	if n.Environment == "" {
		return ""
	}
	err := p.CheckFrozen(n.Environment, t)
	var fe *FrozenError
	if !errors.As(err, &fe) {
		return ""
	}
	if run.Override != nil && slices.Contains(run.Override.Windows, fe.Window.Name) {
		return ""
	}
	return fmt.Sprintf("frozen: %s is frozen by window %s until %s; resume after it, or with --force --reason TEXT", n.Environment, fe.Window.Name, fe.Window.Until.UTC().Format(time.RFC3339))
}

// record writes what succeeded nodes made: the run's images, the release
// record once every service has its pushed digest, and the history entry
// of each environment a node deployed to.
func (x *Executor) record(ctx context.Context, st Store, p *Pipeline, run *Run, imagesChanged, released *bool, deployed []*Node, now func() time.Time) error {
	if *imagesChanged {
		if err := st.SaveRun(ctx, run); err != nil {
			return err
		}
		*imagesChanged = false
		// A branch deployment has no version and makes no release.
		if n := len(p.Spec.Services); n > 0 && len(run.Images) >= n && !*released && run.Kind != KindDeploy {
			rel := &Release{Version: run.Version, Pipeline: run.Pipeline, RunID: run.ID, Commits: run.Commits, Images: run.Images, CreatedAt: now().UTC()}
			if err := st.RecordRelease(ctx, rel); err != nil {
				return err
			}
			*released = true
		}
	}
	for _, n := range deployed {
		// A crash between this record and the node's succeeded status
		// makes the resumed run deploy again: the history already has it
		// once.
		if last, err := st.Deployments(ctx, n.Environment, 1); err == nil && len(last) == 1 &&
			last[0].RunID == run.ID && last[0].Version == run.Version && maps.Equal(last[0].Images, run.Images) {
			continue
		}
		d := &Deployment{Environment: n.Environment, Version: run.Version, RunID: run.ID, Kind: run.Kind, Images: run.Images, At: now().UTC()}
		if run.Kind == KindDeploy {
			d.Refs, d.Commits = run.Refs, run.Commits
		}
		if err := st.RecordDeployment(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// rollback is a deploy node's environment put back on what ran before
// (stages.RolledBack).
type rollback struct {
	environment string
	to          *stages.RolledBack
}

// recordRollbacks adds to the history of each environment a deploy node
// rolled back the release it runs again, after the failed release that
// record wrote: kind rollback, by this run.
func (x *Executor) recordRollbacks(ctx context.Context, st Store, run *Run, rbs []rollback, now func() time.Time) error {
	for _, rb := range rbs {
		d := &Deployment{Environment: rb.environment, Version: rb.to.Version, RunID: run.ID, Kind: KindRollback, Images: rb.to.Images, At: now().UTC()}
		if err := st.RecordDeployment(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// prior is what a node recorded before this attempt: its partial outputs
// and what its stage checkpointed.
func prior(n *Node) stages.Outputs {
	out := maps.Clone(n.Outputs)
	if out == nil {
		out = stages.Outputs{}
	}
	maps.Copy(out, n.Progress)
	return out
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

// NodeIDs are the ids of nodes, in their order.
func NodeIDs(ns []*Node) []string {
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
func (x *Executor) finish(run *Run, n *Node, res result, now func() time.Time, nodeCtx context.Context, stop Status) []*Node {
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
		n.Status, n.Error, n.Progress = Succeeded, "", nil
		if img := n.Outputs["image"]; img != "" && n.Item != "" {
			run.Images[n.Item] = img
		}
	case errors.Is(res.err, stages.ErrWaiting):
		n.Status, n.Error, n.FinishedAt = Waiting, "", nil
	case errors.Is(res.err, stages.ErrFenced) || (nodeCtx.Err() != nil && stop == Fenced):
		n.Status, n.Error = Fenced, "fenced: "+res.err.Error()
	case nodeCtx.Err() != nil && stop == Cancelled:
		by := "someone"
		if run.Cancel != nil {
			by = run.Cancel.By
		}
		n.Status, n.Error = Cancelled, "cancelled by "+by+": "+res.err.Error()
	case nodeCtx.Err() != nil:
		n.Status, n.Error = Interrupted, "interrupted: "+res.err.Error()
	default:
		n.Status, n.Error = Failed, res.err.Error()
	}
	return []*Node{n}
}

// unrecordedEnd is what close could not record: nodes, the run's status,
// and the store's last error.
type unrecordedEnd struct {
	nodes []*Node
	run   bool
	err   error
}

// close records where the run ended, within ctx: the nodes whose last
// change is not recorded yet (unsaved), those a stop left pending, then the
// run's status. It returns the run's result and what it could not record.
func (x *Executor) close(ctx context.Context, st Store, run *Run, nodes, unsaved map[string]*Node, failed, waiting []string, frozen map[string]string, stop Status, now func() time.Time) (unrecordedEnd, error) {
	// A run that stops early marks what was still pending with the reason,
	// so the record says why it did not run.
	var changed []*Node
	for _, n := range run.Nodes {
		if nodes[n.ID] == nil {
			continue
		}
		switch {
		case stop != "" && n.Status == Pending:
			n.Status, n.Error = stop, "run stopped before this node started"
			changed = append(changed, n)
		case unsaved[n.ID] != nil:
			changed = append(changed, n)
		}
	}
	var rec unrecordedEnd
	if err := st.SaveNodes(ctx, run.ID, changed...); err != nil {
		rec.nodes, rec.err = changed, err
	}
	t := now().UTC()
	var result error
	switch {
	case stop == Interrupted:
		run.Status, result = Interrupted, ErrInterrupted
	case stop == Cancelled:
		by := ""
		if run.Cancel != nil {
			by = run.Cancel.By
		}
		run.Status, result = Cancelled, &CancelledError{RunID: run.ID, By: by}
	case stop == Fenced:
		run.Status, result = Fenced, &FencedError{RunID: run.ID}
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
		run.Status, result = Waiting, &WaitingError{RunID: run.ID, Nodes: waiting, Frozen: frozen}
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
	if rec.err != nil {
		// The run's status must not say more than its nodes' do.
		rec.run = true
		return rec, result
	}
	if err := st.SaveRun(ctx, run); err != nil {
		rec.run, rec.err = true, err
	}
	return rec, result
}

// env builds the read-only run data of one node; its log writes derive
// from wctx.
func (x *Executor) env(wctx context.Context, p *Pipeline, run *Run, n *Node, nodes map[string]*Node, logger *slog.Logger) *stages.Env {
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
		Prior:       prior(n),
		Log:         &logWriter{store: x.Store, runID: run.ID, node: n.ID, tee: x.LogTo, now: time.Now, timeout: x.leaseTTL(), base: wctx},
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
