package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
	Cancelled Status = "cancelled"
)

// Done reports whether a node in this status will not change again in this
// attempt of the run.
func (s Status) Done() bool {
	return s == Succeeded || s == Failed || s == Skipped || s == Cancelled
}

// Run is one execution of a pipeline or of a slice of it.
type Run struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"` // run, promote, rollback, tag
	Pipeline    string            `json:"pipeline"`
	Environment string            `json:"environment,omitempty"` // of a promote or rollback
	Version     string            `json:"version"`
	Status      Status            `json:"status"`
	PlanHash    string            `json:"planHash"`
	Commits     map[string]string `json:"commits,omitempty"` // pinned, by repo
	Images      map[string]string `json:"images,omitempty"`  // release digests, by service
	Params      map[string]string `json:"params,omitempty"`  // how it was started (bump, yes, …)
	StartedAt   time.Time         `json:"startedAt"`
	FinishedAt  *time.Time        `json:"finishedAt,omitempty"`
	Nodes       []*Node           `json:"stages"`
}

// Node is the recorded state of one node of a run.
type Node struct {
	ID          string           `json:"id"`
	Stage       string           `json:"stage"`
	Item        string           `json:"item"`
	Environment string           `json:"environment,omitempty"`
	Needs       []string         `json:"needs"`
	Status      Status           `json:"status"`
	Attempts    int              `json:"attempts"`
	Outputs     stages.Outputs   `json:"outputs"`
	Error       string           `json:"error"`
	Approval    *stages.Approval `json:"approval,omitempty"`
	StartedAt   *time.Time       `json:"startedAt,omitempty"`
	FinishedAt  *time.Time       `json:"finishedAt,omitempty"`
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
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	Text string    `json:"text"`
}

// RunFilter selects runs for ListRuns.
type RunFilter struct {
	Limit int // 0: all
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
	Kind        string            `json:"kind"` // run, promote, rollback
	Images      map[string]string `json:"images"`
	At          time.Time         `json:"deployedAt"`
}

// Lease is a lock with an expiry, held by a run and kept alive by renewing
// it. Fence grows by one with every acquisition, so a holder that lost its
// lease can tell, and the store refuses its renewals.
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
	return fmt.Sprintf("%s is locked by run %s (lease expires %s unless renewed)", e.Name, e.Holder, e.Expires.UTC().Format(time.RFC3339))
}

// ErrLeaseLost is returned when renewing a lease someone else took over.
var ErrLeaseLost = errors.New("lease lost")

// ErrReleaseChanged is returned when a release would be recorded again with
// other commits or digests.
var ErrReleaseChanged = errors.New("a release of this version exists with other commits or digests")
