// Package stages is the contract between the engine and the stage kinds it
// runs: the Stage interface, the read-only run data a stage sees (Env), the
// part of the pipeline file stages may read (Spec), and the registry of kinds.
//
// The lifecycle of a stage:
//
//  1. The loader looks up the stage's kind (`uses:`) in a Registry and calls
//     Kind.New for a fresh zero value.
//  2. The loader decodes the stage's `with:` block strictly into that value
//     (unknown keys are errors), then calls Validate if the stage has it.
//  3. The executor calls Run once per node and attempt, possibly for several
//     nodes of the same stage at once (fan-out), so Run must not mutate the
//     stage value. Everything that varies per node comes in through *Env.
//  4. Run returns the node's outputs, which the executor records in the run
//     and hands to downstream nodes; a resumed run reuses them. Outputs
//     returned together with an error are recorded too, as partial progress
//     (for example which repos a tag stage already pushed).
package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"
)

// Stage is one node type of the DAG.
type Stage interface {
	Run(ctx context.Context, env *Env) (Outputs, error)
}

// Validator is implemented by stages that check their `with:` configuration
// beyond what strict decoding checks. The error is reported at the stage's
// position in the pipeline file by `release validate`.
type Validator interface {
	Validate(spec *Spec) error
}

// Doctor is implemented by stages that can check the outside world they
// depend on (hosts, registries, remotes, tokens) for `release doctor`.
// Doctor should return at once, each check's work in its Run: doctor runs
// every check side by side, each within its own deadline, and reports a
// check that has not answered by the command's bound as failed.
type Doctor interface {
	Doctor(ctx context.Context, spec *Spec) []Check
}

// Deployer is implemented by stages that make the release live in their
// node's environment. When such a node succeeds, the engine records the
// release in that environment's history.
type Deployer interface {
	DeploysRelease() bool
}

// Check is one verdict of `release doctor`.
type Check struct {
	Name string // what was checked, e.g. "registry 127.0.0.1:5000"
	Err  error  // nil when it is fine; ignored when Run is set
	// Run, when set, makes the check: doctor calls it once, in parallel
	// with the other checks, with a context that bounds it, and takes its
	// error as the verdict. An error wrapping ErrNotChecked leaves the
	// check out of the report.
	Run func(ctx context.Context) error
}

// ErrNotChecked is wrapped by the error of a Check's Run that did not
// check anything because a check it builds on failed (a tag push probe of
// a remote that does not answer): that failure is the one reported.
var ErrNotChecked = errors.New("not checked")

// Outputs are the string results of one node, recorded in the run state.
// Keys are lowerCamel, like the JSON the command line prints.
type Outputs map[string]string

// Env is the read-only run data of one node. A stage must not modify it.
type Env struct {
	RunID       string
	RunKind     string // run, promote, rollback, tag
	Version     string // the release version, without prefix changes
	Node        string // node id, e.g. "push[api]"
	Stage       string // stage name, e.g. "push"
	Item        string // the for_each item (a service name), or ""
	Environment string // the stage's environment, or ""
	Attempt     int    // 1 for the first attempt

	Spec *Spec
	// WorkDir is where stages keep caches (repo mirrors, build contexts):
	// the state directory beside the pipeline file, e.g. ".release".
	WorkDir string

	// Commits are the pinned commits of the run, by repo name.
	Commits map[string]string
	// Inputs are the outputs of every node that succeeded in this run so
	// far, by node id; a node sees at least those of its upstream nodes.
	Inputs map[string]Outputs
	// Images are the release's image digests by service
	// ("127.0.0.1:5000/sweepboard/api@sha256:…"): from the release record
	// when promoting, or from the "image" output of upstream per-service
	// nodes in a run.
	Images map[string]string
	// Approval is set on an approval node that has been approved.
	Approval *Approval

	// Fence confirms that this process still owns the run and holds the
	// leases of its environments. Every stage with an external effect (a
	// cut-over, a push, a tag, a command) calls it right before the effect
	// and stops if it fails: its error wraps ErrFenced. It is never nil
	// when the executor runs a node.
	Fence func(ctx context.Context) error
	// LeaseExpiry is the local time until which this process is known to
	// own the run: the earliest expiry of its leases as last renewed. Work
	// that outlives the process (a child command) must stop by then unless
	// it sees a later expiry. Zero when the run holds no lease.
	LeaseExpiry func() time.Time

	// Prior are the outputs this node recorded before: partial progress of
	// an earlier attempt or of an owner that died (for example the process
	// group of a command that was running). Empty on a first attempt.
	Prior Outputs
	// Checkpoint records progress of this node in the run state now, before
	// the stage returns, so that a later owner finds it in Prior after a
	// crash. It is kept apart from the node's outputs and cleared when the
	// node succeeds. It is never nil when the executor runs a node.
	Checkpoint func(ctx context.Context, out Outputs) error

	// Log receives the node's output (command output, build logs); it is
	// stored in the run's log. Logger is for structured progress.
	Log    io.Writer
	Logger *slog.Logger
}

// Approval records who let a waiting node go on, and when.
type Approval struct {
	By      string    `json:"by"`
	At      time.Time `json:"at"`
	UpFront bool      `json:"upFront"` // given with --yes when the run started
}

// ErrFenced is wrapped by the error of a stage that stopped before (or
// during) its external effect because the process no longer owns the run:
// its lease expired or another owner took it. The node is recorded as
// fenced, never as succeeded, and another owner may redo it.
var ErrFenced = errors.New("fenced out: this process no longer owns the run")

// ErrPublished is wrapped by the error of a stage that finds its version
// already published with other contents (an image tag, a git tag). A
// resume cannot mend it: a published version is never overwritten, and
// the run must be started anew with the next version.
var ErrPublished = errors.New("a published version is never overwritten")

// RolledBack is the error of a Deployer that made the run's release live
// in its environment, saw it fail its verification and put the
// environment back on the release that ran before: the engine records
// both in the environment's history, the failed release and then the
// rollback to Version and Images, and the node fails with Err.
type RolledBack struct {
	Version string            // the release the environment runs again
	Images  map[string]string // its digests, by service
	Err     error             // why: the check that failed
}

func (e *RolledBack) Error() string { return e.Err.Error() }
func (e *RolledBack) Unwrap() error { return e.Err }

// ErrWaiting is returned by a stage that cannot go on until someone approves
// it. The node becomes "waiting" and the run stops, resumable.
var ErrWaiting = errors.New("waiting for approval")

// Error is a stage failure that the user should read as is: bad input or a
// refusal by the outside world, as opposed to a bug. Retry tells the executor
// whether another attempt may help.
type Error struct {
	Err   error
	Retry bool
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err}
}

// IsPermanent reports whether err was marked as not worth retrying.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && !e.Retry
}

// Kind is a registered stage type.
type Kind struct {
	Name string
	// New returns a fresh zero stage; its exported fields with yaml tags
	// are its `with:` configuration.
	New func() Stage
	// Targets are the deploy targets an environment's `target:` may name,
	// for a kind that deploys through them; the loader and the file's
	// schema ask the registry for them.
	Targets []string
}

// Registry maps kind names to kinds. The zero value is empty and usable.
type Registry struct {
	kinds map[string]Kind
}

// Register adds a kind. It panics on an empty or duplicate name: both are
// programming errors in the list that builds the registry.
func (r *Registry) Register(k Kind) {
	if k.Name == "" || k.New == nil {
		panic("stages: Register of a kind without a name or constructor")
	}
	if _, dup := r.kinds[k.Name]; dup {
		panic(fmt.Sprintf("stages: kind %q registered twice", k.Name))
	}
	if r.kinds == nil {
		r.kinds = make(map[string]Kind)
	}
	r.kinds[k.Name] = k
}

// Lookup returns the kind registered under name. The error of an unknown
// name lists the known ones, sorted.
func (r *Registry) Lookup(name string) (Kind, error) {
	if k, ok := r.kinds[name]; ok {
		return k, nil
	}
	return Kind{}, fmt.Errorf("unknown stage kind %q (known: %s)", name, joinQuoted(r.Names()))
}

// Targets returns the deploy targets of the registered kinds, sorted.
func (r *Registry) Targets() []string {
	var names []string
	for _, k := range r.kinds {
		for _, t := range k.Targets {
			if !slices.Contains(names, t) {
				names = append(names, t)
			}
		}
	}
	sortStrings(names)
	return names
}

// Names returns the registered kind names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		names = append(names, n)
	}
	sortStrings(names)
	return names
}
