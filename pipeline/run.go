package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sweepboard/release/stages"
)

// Status is the state of a run or of one of its nodes.
type Status string

// The statuses. A run is running, waiting, succeeded, failed or cancelled;
// a node can be any of them.
const (
	Pending   Status = "pending"
	Running   Status = "running"
	Waiting   Status = "waiting"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
	Skipped   Status = "skipped"
	Cancelled Status = "cancelled" // someone cancelled the run (release cancel): never resumed
	// Interrupted: a signal (SIGINT, SIGTERM) stopped the owner; resumable.
	Interrupted Status = "interrupted"
	// Fenced: the owner lost its claim on the run or a lease of one of its
	// environments (expiry, store unreachable, taken over) and stopped;
	// resumable. A fenced node never counts as succeeded.
	Fenced Status = "fenced"
)

// Statuses are every status, in the order a node goes through them: the
// values a filter or a completion offers.
var Statuses = []Status{Pending, Running, Waiting, Succeeded, Failed, Skipped, Cancelled, Interrupted, Fenced}

// Done reports whether a node in this status will not change again in this
// attempt of the run.
func (s Status) Done() bool {
	switch s {
	case Succeeded, Failed, Skipped, Cancelled, Interrupted, Fenced:
		return true
	}
	return false
}

// Run is one execution of a pipeline or of a slice of it.
type Run struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"` // run, promote, rollback, tag, deploy
	Pipeline    string            `json:"pipeline"`
	Environment string            `json:"environment,omitempty"` // of a promote or rollback
	Version     string            `json:"version"`
	Status      Status            `json:"status"`
	PlanHash    string            `json:"planHash"`
	Commits     map[string]string `json:"commits,omitempty"` // pinned, by repo
	Images      map[string]string `json:"images,omitempty"`  // release digests, by service
	Params      map[string]string `json:"params,omitempty"`  // how it was started, for people (bump, yes, from, …); never read back
	StartedAt   time.Time         `json:"startedAt"`
	FinishedAt  *time.Time        `json:"finishedAt,omitempty"`
	Nodes       []*Node           `json:"stages"`

	// Owner describes who executes the run now, or last did: the claim's
	// holder (see Owner). Empty for a run nobody executed yet.
	Owner string `json:"owner,omitempty"`
	// Cancel, once set, is a request that the run stop for good: the owner
	// observes it within a second, and the run is never resumed.
	Cancel *Cancel `json:"cancel,omitempty"`
	// Override records a freeze window overridden for this run.
	Override *Override `json:"override,omitempty"`
	// SkipReason says why a scheduled fire made no release.
	SkipReason string `json:"skipReason,omitempty"`
	// Schedule names the schedule that fired the run.
	Schedule string `json:"schedule,omitempty"`
	// Stages limits the run to these stages (a rollback runs only the
	// environment's deploy stages); empty means the whole slice.
	Stages []string `json:"sliceStages,omitempty"`
	// Refs are the branches (or commits) given with --ref, by repo: a
	// hotfix release built from release branches, or a branch deployment
	// (kind deploy) that is no release. Empty for a run of the file's
	// branches.
	Refs map[string]string `json:"refs,omitempty"`
}

// Cancel is who asked a run to stop, and when.
type Cancel struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// Override is a freeze window gone through on purpose: by whom, why, when,
// and which windows.
type Override struct {
	By      string    `json:"by"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	Windows []string  `json:"windows,omitempty"`
}

// Node is the recorded state of one node of a run.
type Node struct {
	ID          string         `json:"id"`
	Stage       string         `json:"stage"`
	Item        string         `json:"item"`
	Environment string         `json:"environment,omitempty"`
	Needs       []string       `json:"needs"`
	Status      Status         `json:"status"`
	Attempts    int            `json:"attempts"`
	Outputs     stages.Outputs `json:"outputs"`
	// Progress is what the node's stage checkpointed while it ran (the
	// process group of a command, say), for a later owner after a crash.
	// It is cleared when the node succeeds.
	Progress   stages.Outputs   `json:"progress,omitempty"`
	Error      string           `json:"error"`
	Approval   *stages.Approval `json:"approval,omitempty"`
	StartedAt  *time.Time       `json:"startedAt,omitempty"`
	FinishedAt *time.Time       `json:"finishedAt,omitempty"`
}

// Node returns the node with the given id, or nil.
func (r *Run) Node(id string) *Node {
	for _, n := range r.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// NewRunID returns a new run id: the UTC start time and a random suffix,
// so ids sort by age and stay short enough to type.
func NewRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// NewRun makes the record of a run of plan, every node pending.
func NewRun(kind string, p *Pipeline, plan *Plan, now time.Time) *Run {
	r := &Run{
		ID:        NewRunID(now),
		Kind:      kind,
		Pipeline:  p.Spec.Name,
		Status:    Pending,
		PlanHash:  plan.Hash(),
		Params:    map[string]string{},
		StartedAt: now.UTC(),
	}
	for _, pn := range plan.Nodes {
		r.Nodes = append(r.Nodes, &Node{
			ID:          pn.ID,
			Stage:       pn.Stage,
			Item:        pn.Item,
			Environment: pn.Environment,
			Needs:       pn.Needs,
			Status:      Pending,
			Outputs:     stages.Outputs{},
		})
	}
	return r
}

// ErrNotFound is returned by a Store for a run that does not exist.
var ErrNotFound = errors.New("not found")

// LogLine is one line of a node's output.
type LogLine struct {
	// Seq is the line's place in the store's log, growing with each line
	// appended: the cursor of LogPage and LogTail. Set when read back;
	// AppendLog ignores it.
	Seq  int64     `json:"seq,omitempty"`
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	Text string    `json:"text"`
}

// RunFilter selects runs for Runs. Its fields combine: a run is listed when
// it matches every field that is set.
type RunFilter struct {
	Limit int // 0: all
	// Status keeps the runs in one of these statuses.
	Status []Status
	// Environment keeps the runs recorded for it (a promotion, a rollback)
	// and the runs with a node in it.
	Environment string
	// Kind keeps the runs of one kind (run, promote, rollback, tag).
	Kind string
	// Before keeps the runs older than the run with this id; After, the
	// runs newer than it, the Limit of them nearest to it. Either way the
	// list is newest first. An unknown id is ErrNotFound.
	Before, After string
}

// Store keeps runs. Every method commits before it returns: when SaveNode
// returns nil, the change survives a crash of the process.
type Store interface {
	// CreateRun records a new run with its nodes.
	CreateRun(ctx context.Context, r *Run) error
	// SaveRun updates the run's own fields (status, version, commits,
	// images, params, finish time); not its nodes.
	SaveRun(ctx context.Context, r *Run) error
	// SaveNodes updates nodes of a run, in one transaction.
	SaveNodes(ctx context.Context, runID string, nodes ...*Node) error
	// Run returns a run with its nodes. A run id prefix that matches one
	// run is accepted.
	Run(ctx context.Context, id string) (*Run, error)
	// Runs lists runs, newest first, without their nodes.
	Runs(ctx context.Context, f RunFilter) ([]*Run, error)
	// AppendLog adds output lines of a node.
	AppendLog(ctx context.Context, runID string, lines []LogLine) error
	// Logs returns the output of a run, or of one node when node is set.
	Logs(ctx context.Context, runID, node string) ([]LogLine, error)
	// LogPage returns, in order, up to limit lines of that output that
	// come after the line whose Seq is after (0: from the first line), and
	// the cursor to pass as after for the next page: the Seq of the last
	// line returned, or after itself when there was none.
	LogPage(ctx context.Context, runID, node string, after int64, limit int) ([]LogLine, int64, error)
	// LogTail returns, in order, the last limit lines of that output before
	// the line whose Seq is before (0: the end).
	LogTail(ctx context.Context, runID, node string, before int64, limit int) ([]LogLine, error)

	// RecordRelease stores a release once. Recording the same release again
	// is a no-op; recording another with the same version is
	// ErrReleaseChanged.
	RecordRelease(ctx context.Context, r *Release) error
	// Release returns the release of a version.
	Release(ctx context.Context, version string) (*Release, error)
	// RecordDeployment adds to an environment's history.
	RecordDeployment(ctx context.Context, d *Deployment) error
	// Deployments returns an environment's history, newest first; all
	// environments when env is "". limit 0 means all.
	Deployments(ctx context.Context, env string, limit int) ([]*Deployment, error)

	// AcquireLease takes the named lease for holder until now+ttl, when it
	// is free, expired, or already the holder's. Otherwise *HeldError.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (*Lease, error)
	// RenewLease extends a held lease; ErrLeaseLost when its fence moved on
	// or it expired and someone else took it.
	RenewLease(ctx context.Context, l *Lease, ttl time.Duration) error
	// ReleaseLease gives a lease up, if it is still held with l's fence.
	ReleaseLease(ctx context.Context, l *Lease) error
	// TakeOverLease takes the named lease for holder from the holder from,
	// expired or not, when from still holds it: for an owner known to be
	// dead. Otherwise *HeldError, as AcquireLease.
	TakeOverLease(ctx context.Context, name, from, holder string, ttl time.Duration) (*Lease, error)
	// Approve records a on the nodes of run id that still wait; it
	// returns the ones it approved. It is the approver's only write: the
	// rest of each node belongs to the run's owner.
	Approve(ctx context.Context, id string, nodes []string, a *stages.Approval) ([]string, error)
	// RequestCancel records a request that the run stop for good; the
	// owner observes it. ErrAlreadyCancelled when one was made before,
	// ErrNotFound when there is no run id.
	RequestCancel(ctx context.Context, id string, c Cancel) error
	// CreateInstance records instance name of template once, its Caddy
	// listen addresses chosen by pick from those no instance of the store
	// holds (taken); an instance recorded already is returned unchanged,
	// and no two instances ever hold one address.
	CreateInstance(ctx context.Context, pipeline, name, template string, pick func(taken []string) (map[string]string, error)) (*Instance, error)
	// Instance returns an instance's record; ErrNotFound without one.
	Instance(ctx context.Context, pipeline, name string) (*Instance, error)
	// Instances lists a pipeline's instances, by name.
	Instances(ctx context.Context, pipeline string) ([]*Instance, error)
	// RemoveInstance deletes an instance's record and frees its
	// addresses; a missing one is fine.
	RemoveInstance(ctx context.Context, pipeline, name string) error
	// Fenced returns a view of the store whose writes of runs, nodes,
	// releases and deployments commit only while l is still held with its
	// fence, checked in the same transaction; otherwise they fail with
	// ErrLeaseLost and change nothing. It shares the store's connection:
	// closing the view closes nothing.
	Fenced(l *Lease) Store

	// AllocateVersion hands out a version of a pipeline to a run, once:
	// pick sees every version of the pipeline handed out so far and names
	// the one to take; two callers never get the same one. A version once
	// handed out is never handed out again.
	AllocateVersion(ctx context.Context, pipeline, runID string, pick func(taken []string) (string, error)) (string, error)
	// FreeVersion gives back a version that runID was allocated but never
	// recorded a run under (the run was refused before it started).
	FreeVersion(ctx context.Context, pipeline, version, runID string) error

	Close() error
}

// Release is the bill of materials of one version: the commit each repo was
// built from and the digest of each service's image. It is written once,
// when the images are pushed, and never changed: every environment gets
// exactly these digests.
type Release struct {
	Version   string            `json:"version"`
	Pipeline  string            `json:"pipeline"`
	RunID     string            `json:"runId"`
	Commits   map[string]string `json:"commits"`
	Images    map[string]string `json:"images"`
	CreatedAt time.Time         `json:"createdAt"`
}

// Deployment is a release going live in an environment: one entry of the
// environment's history.
type Deployment struct {
	Seq         int64             `json:"seq"`
	Environment string            `json:"environment"`
	Version     string            `json:"version"`
	RunID       string            `json:"runId"`
	Kind        string            `json:"kind"` // run, promote, rollback, deploy
	Images      map[string]string `json:"images"`
	At          time.Time         `json:"deployedAt"`
	// Refs and Commits are what a branch deployment (kind deploy, no
	// version) built: the ref given for each repo and the commit it
	// pointed at. Refs is empty for a release.
	Refs    map[string]string `json:"refs,omitempty"`
	Commits map[string]string `json:"commits,omitempty"`
}

// Instance is an environment made from a template for a branch
// (dev-login of dev-*), recorded from its first deployment until release
// env rm or prune removes it.
type Instance struct {
	Pipeline string `json:"-"`
	Name     string `json:"name"`
	Template string `json:"template"`
	// Listen are the Caddy listen addresses picked for it, by service.
	Listen    map[string]string `json:"listen"`
	CreatedAt time.Time         `json:"createdAt"`
}

// Branch reports whether d is a branch deployment: no release, never
// promoted.
func (d *Deployment) Branch() bool { return d.Kind == KindDeploy }

// KindDeploy is the kind of a run that deploys branches to an environment
// (release deploy ENV --ref …): no version, no tags, no release record.
const KindDeploy = "deploy"

// KindRollback is the kind of a run that rolls an environment back, and
// of the history entry of a deploy that verification rolled back.
const KindRollback = "rollback"

// Lease is a lock with an expiry, held by one owner (see Owner) and kept
// alive by renewing it. Fence grows by one with every acquisition, so a
// holder that lost its lease can tell, and the store refuses its renewals
// and, through Store.Fenced, its writes.
type Lease struct {
	Name    string    `json:"name"`
	Holder  string    `json:"holder"`
	Fence   int64     `json:"fence"`
	Expires time.Time `json:"expires"`
}

// HeldError reports a lease held by someone else.
type HeldError struct {
	Name    string
	Holder  string
	Expires time.Time
}

func (e *HeldError) Error() string {
	o := ParseHolder(e.Holder)
	what := "locked by"
	if strings.HasPrefix(e.Name, ClaimPrefix) {
		what = "being executed by"
	}
	return fmt.Sprintf("%s is %s %s (lease expires %s unless renewed)", e.Name, what, o, e.Expires.UTC().Format(time.RFC3339))
}

// ErrAlreadyCancelled is returned by RequestCancel for a run someone
// cancelled before.
var ErrAlreadyCancelled = errors.New("already cancelled")

// ErrLeaseLost is returned when renewing a lease someone else took over,
// and by the writes of a fenced store whose lease moved on.
var ErrLeaseLost = errors.New("lease lost")

// ClaimPrefix names the lease that is a run's claim: "run/ID". The owner of
// a run holds it for as long as it executes the run.
const ClaimPrefix = "run/"

// Owner is one execution of a run by one process: a fresh random token for
// every claim (never the run id or a pid), with where it runs, for people.
type Owner struct {
	Token string
	RunID string
	Host  string
	PID   int
}

// NewOwner makes a fresh owner of run id for this process.
func NewOwner(runID string) Owner {
	var b [8]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return Owner{Token: hex.EncodeToString(b[:]), RunID: runID, Host: host, PID: os.Getpid()}
}

// Holder is the owner as a lease holder: "TOKEN run ID on HOST pid PID".
func (o Owner) Holder() string {
	return fmt.Sprintf("%s run %s on %s pid %d", o.Token, o.RunID, o.Host, o.PID)
}

// String names the owner for people.
func (o Owner) String() string {
	if o.Host == "" {
		return "run " + o.RunID
	}
	return fmt.Sprintf("run %s (%s pid %d, owner %s)", o.RunID, o.Host, o.PID, o.Token)
}

// ParseHolder reads a lease holder back; a holder written by an older
// release (a bare run id) gives an Owner with only RunID.
func ParseHolder(h string) Owner {
	var o Owner
	if n, _ := fmt.Sscanf(h, "%s run %s on %s pid %d", &o.Token, &o.RunID, &o.Host, &o.PID); n == 4 {
		return o
	}
	return Owner{RunID: h}
}

// ErrReleaseChanged is returned when a release would be recorded again with
// other commits or digests.
var ErrReleaseChanged = errors.New("a release of this version exists with other commits or digests")
