// Package engine is what release does, as one API: run, resume, promote,
// roll back, approve, cancel, tag, a scheduled fire and status. The command
// line, the HTTP server and the scheduler are thin callers of it: each turns
// a request into a call and the typed result or error into its own output,
// and none reads another's output.
//
// The outside world comes in through small interfaces (Repos, Registry,
// Inspector) that cmd/release wires to the real clients, so the engine
// depends on pipeline and stages only.
//
// Errors are typed: *UsageError (the request is wrong), *RefusedError (the
// state of things refuses it), and the executor's *pipeline.HeldError,
// *pipeline.WaitingError, *pipeline.FailedError, *pipeline.CancelledError,
// *pipeline.FencedError, *pipeline.DoneError, pipeline.ErrInterrupted and
// pipeline.ErrNotFound. Each caller maps them to exit codes or HTTP
// statuses in one place.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// Engine runs the use cases of one pipeline on one store.
type Engine struct {
	Pipeline *pipeline.Pipeline
	Store    pipeline.Store
	// Stages is the registry of stage kinds: Tag runs the git-tag kind on
	// its own.
	Stages *stages.Registry
	// WorkDir is where stages keep caches (repo mirrors, build contexts).
	WorkDir string
	// Repos are the pipeline's repos; nil when it has none.
	Repos Repos
	// Registry checks that a release's images still exist before a
	// promotion or a rollback; nil skips the check.
	Registry Registry
	// Inspector tells what runs in an environment, for Status; nil makes
	// Status report the record only.
	Inspector Inspector
	// Resources reads the proxy addresses in use and removes what an
	// instance of a template made (release env rm); nil picks addresses
	// from the store alone and removes records only.
	Resources Resources
	// LeaseTTL is how long a run's claim and environment locks outlive an
	// owner that stopped renewing them; 0 is pipeline.DefaultLeaseTTL.
	LeaseTTL time.Duration
	Now      func() time.Time
}

// Repos is what the engine asks of a pipeline's repos.
type Repos interface {
	// Heads pins the head commit of every repo's branch.
	Heads(ctx context.Context) (map[string]string, error)
	// Next is the version a release of commits gets: given, when it is
	// not "", else the newest release tag bumped by bump. It wraps
	// ErrNothingToRelease when an auto bump finds nothing to release.
	Next(ctx context.Context, bump, given string, commits map[string]string) (Version, error)
	// Tagged are the commits version's release tag points at, by repo,
	// for the repos that have the tag.
	Tagged(ctx context.Context, version string) (map[string]string, error)
	// Notes are the release notes of version: each repo's changes from its
	// release tag before version up to commits[repo] (the version's tag,
	// else the branch head, when missing), as the notes policy lists them.
	Notes(ctx context.Context, version string, commits map[string]string) (RepoNotes, error)
	// Log lists the commits of a repo reachable from to and not from from
	// (every commit up to to when from is ""), newest first.
	Log(ctx context.Context, repo, from, to string) ([]Commit, error)
}

// RepoNotes are the repos' release notes of one version.
type RepoNotes struct {
	Markdown string
	// Detail is each repo's changelog, for -o json.
	Detail any
}

// Commit is one commit of a repo's log.
type Commit struct {
	SHA     string `json:"sha"`
	Subject string `json:"subject"`
}

// Version is the version of a new release and why.
type Version struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
	// Bump is the bump applied (major, minor, patch), for bumping again
	// when the version is taken; "" for a given version.
	Bump string `json:"-"`
	// PreviousTag is the newest release tag; Quiet says no repo has a
	// commit since it.
	PreviousTag string `json:"-"`
	Quiet       bool   `json:"-"`
	// Detail is the repos' own account of the choice (per repo commits and
	// bumps), for `version next -o json`; nil without repos.
	Detail any `json:"-"`
}

// ErrNothingToRelease is wrapped by Repos.Next and by Run when no commit
// asks for a release.
var ErrNothingToRelease = errors.New("nothing to release")

// Registry is the image registry's side of a promotion.
type Registry interface {
	// Missing lists the services whose image (a digest reference) the
	// registry no longer has.
	Missing(ctx context.Context, images map[string]string) ([]string, error)
}

// Inspector tells what runs in an environment.
type Inspector interface {
	Inspect(ctx context.Context, environment string) ([]Live, error)
}

// Live is one service's container in an environment as its host reports it.
type Live struct {
	Service string
	Host    string
	Digest  string // "registry/image@sha256:…"
	State   string // running, exited, …; "missing" when none runs
	Healthy bool
	Health  string // what the health check saw
}

// Observer sees an execution as it happens. Every field may be nil.
type Observer struct {
	// Created is called with the id of a new run (Run) as soon as it is
	// made, before the repos are fetched, its version allocated and it is
	// recorded: a caller can show it from the first second. A run refused
	// after that (a repo that cannot be fetched, a held lock) is never
	// recorded under it.
	Created func(runID string)
	// Fetching is called with the repos a new run fetches, before the
	// first fetch starts, when the Repos report each (HeadsReporter):
	// a caller can show what is still on the way while it waits.
	Fetching func(repos []string)
	// Fetched is called as each repo's head is fetched for a new run, when
	// the Repos can tell (HeadsReporter).
	Fetched func(repo, head string, took time.Duration)
	// Started is called once the run is owned by this process and
	// recorded, before any node starts.
	Started func(*pipeline.Run)
	// Event sees every status change of a node, in order.
	Event func(pipeline.Event)
	// Log sees every line the nodes log.
	Log func(pipeline.LogLine)
	// Notice sees lines meant for people ("prod is frozen …; going anyway").
	Notice func(string)
}

func (o Observer) notice(format string, args ...any) {
	if o.Notice != nil {
		o.Notice(fmt.Sprintf(format, args...))
	}
}

// UsageError is a request that is wrong in itself: a flag value, an
// unknown environment. Nothing was changed.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// RefusedError is a request the state of things refuses now: nothing to
// promote, a version that never reached the environment, images gone from
// the registry, a frozen environment. Nothing was changed.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

func refusedf(format string, args ...any) error {
	return &RefusedError{Err: fmt.Errorf(format, args...)}
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// MaxParallel bounds the nodes that run at once when Exec.Parallel is 0.
const MaxParallel = 32

// Exec says how a run executes.
type Exec struct {
	// Parallel is how many nodes run at once; 0 sizes it for the work:
	// every node of the plan, up to MaxParallel. A node spends its time
	// waiting on an engine, a registry or a remote, not on this machine's
	// CPUs: eight builds and eight pushes at two at a time (the CPU count
	// here) queued pushes behind builds that were only streaming bytes.
	Parallel int
	// Wait makes a held claim or environment lock a wait instead of a
	// *pipeline.HeldError.
	Wait bool
}

// execute runs run (recording it first when create is set) under a fresh
// owner and returns the executor's error.
func (e *Engine) execute(ctx context.Context, p *pipeline.Pipeline, plan *pipeline.Plan, run *pipeline.Run, create bool, ex Exec, obs Observer) error {
	x := &pipeline.Executor{
		Store:    e.Store,
		Parallel: cmp.Or(ex.Parallel, min(len(plan.Nodes), MaxParallel)),
		WorkDir:  e.WorkDir,
		Observe:  obs.Event,
		LogTo:    obs.Log,
		OnStart:  obs.Started,
		Locks:    locksOf(plan),
		Wait:     ex.Wait,
		LeaseTTL: e.LeaseTTL,
		Now:      e.Now,
	}
	var err error
	if create {
		err = x.Start(ctx, p, plan, run)
	} else {
		err = x.Execute(ctx, p, plan, run)
	}
	var held *pipeline.HeldError
	if errors.As(err, &held) && create && run.Kind == "run" && run.Version != "" {
		// Refused before it was recorded: nothing was published under
		// its version, which the next run may take.
		// Within a grace: a signal may be what ended the wait.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pipeline.DefaultGrace)
		_ = e.Store.FreeVersion(fctx, run.Pipeline, run.Version, run.ID)
		cancel()
	}
	return err
}

// locksOf are the environment locks a run holds: one per environment its
// nodes deploy to or act in.
func locksOf(plan *pipeline.Plan) []string {
	var locks []string
	for _, n := range plan.Nodes {
		if n.Environment != "" {
			locks = append(locks, "env/"+n.Environment)
		}
	}
	return locks
}

// NotResumable says what to do instead of a resume when a failure cannot
// be mended by one (the version is published with other contents), or "".
func NotResumable(fe *pipeline.FailedError) string {
	for _, n := range fe.Nodes {
		if strings.Contains(n.Error, stages.ErrPublished.Error()) {
			return "this run cannot publish its version: start a new run (release run), which takes the next version"
		}
	}
	return ""
}
