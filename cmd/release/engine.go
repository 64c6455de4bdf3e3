package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy"
)

// Engine wires the engine to the real clients: the pipeline file, the
// store, the repos over go-git, the registry and the Docker hosts.
func (f *Factory) Engine(ctx context.Context) (*engine.Engine, error) {
	p, err := f.Pipeline()
	if err != nil {
		return nil, err
	}
	st, err := f.Store(ctx)
	if err != nil {
		return nil, err
	}
	return f.engineFor(p, st), nil
}

// engineFor is the engine of a pipeline and store already open.
func (f *Factory) engineFor(p *pipeline.Pipeline, st pipeline.Store) *engine.Engine {
	e := &engine.Engine{
		Pipeline:  p,
		Store:     st,
		Stages:    f.Registry(),
		WorkDir:   f.WorkDir(),
		Registry:  registryImages{spec: p.Spec, getenv: f.Getenv},
		Inspector: hostInspector{spec: p.Spec},
		Resources: hostResources{},
		LeaseTTL:  f.LeaseTTL(),
	}
	if len(p.Spec.Repos) > 0 {
		e.Repos = gitRepos{spec: p.Spec, workDir: f.WorkDir()}
	}
	return e
}

// gitRepos are the pipeline's repos for the engine. Each call opens them
// anew: a long-lived server must see what was pushed since its last call.
type gitRepos struct {
	spec    *stages.Spec
	workDir string
}

func (g gitRepos) Heads(ctx context.Context) (map[string]string, error) {
	return repos.New(g.spec, g.workDir).Heads(ctx)
}

func (g gitRepos) HeadsEach(ctx context.Context, fetched func(repo, head string, took time.Duration)) (map[string]string, error) {
	return repos.New(g.spec, g.workDir).HeadsEach(ctx, fetched)
}

func (g gitRepos) Next(ctx context.Context, bump, given string, commits map[string]string) (engine.Version, error) {
	set := repos.New(g.spec, g.workDir)
	var next repos.Next
	var err error
	if given != "" {
		next, err = set.GivenVersion(ctx, given, commits)
	} else {
		next, err = set.NextVersion(ctx, bump, commits)
	}
	if errors.Is(err, repos.ErrNothingToRelease) {
		// The answer still says why (Reason, Detail; no Version), for
		// version next -o json; the engine's callers pass it on as is.
		return engine.Version{Reason: next.Reason, Bump: next.Bump, PreviousTag: next.PreviousTag, Detail: &next}, nothingToRelease{err}
	}
	if err != nil {
		return engine.Version{}, err
	}
	quiet := next.Previous != "" && len(next.Repos) > 0
	for _, rc := range next.Repos {
		quiet = quiet && rc.Commits == 0
	}
	return engine.Version{Version: next.Version, Reason: next.Reason, Bump: next.Bump, PreviousTag: next.PreviousTag, Quiet: quiet, Detail: &next}, nil
}

// nothingToRelease is the repos' reason, as engine.ErrNothingToRelease.
type nothingToRelease struct{ err error }

func (e nothingToRelease) Error() string        { return e.err.Error() }
func (e nothingToRelease) Is(target error) bool { return target == engine.ErrNothingToRelease }
func (e nothingToRelease) Unwrap() error        { return e.err }

// registryImages looks release images up in the registry.
type registryImages struct {
	spec   *stages.Spec
	getenv func(string) string
}

func (r registryImages) Missing(ctx context.Context, images map[string]string) ([]string, error) {
	return deploy.Missing(ctx, r.spec, images, r.getenv)
}

// hostInspector asks an environment's Docker hosts what runs.
type hostInspector struct{ spec *stages.Spec }

func (h hostInspector) Inspect(ctx context.Context, env string) ([]engine.Live, error) {
	live, err := deploy.Inspect(ctx, h.spec, env)
	out := make([]engine.Live, len(live))
	for i, l := range live {
		out[i] = engine.Live{Service: l.Service, Host: l.Host, Digest: l.Digest, State: l.State, Healthy: l.Healthy, Health: l.Health}
	}
	return out, err
}

// InspectSpec is Inspect of an environment of spec: an instance of a
// template.
func (h hostInspector) InspectSpec(ctx context.Context, spec *stages.Spec, env string) ([]engine.Live, error) {
	return hostInspector{spec: spec}.Inspect(ctx, env)
}

// hostResources are the Docker hosts and Caddy of the environments per
// branch, through the deploy stage's clients.
type hostResources struct{}

func (hostResources) Listening(ctx context.Context, spec *stages.Spec, admin, env string) ([]string, error) {
	return deploy.Listening(ctx, spec, admin, env)
}

// Bound says whether something on this machine listens on addr: a listen
// there fails with "address in use". An address of another machine says
// no, and Caddy refuses it when it is taken there.
func (hostResources) Bound(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	l.Close()
	return false
}

func (hostResources) Remove(ctx context.Context, spec *stages.Spec, env string) (engine.Removed, error) {
	r, err := deploy.RemoveEnvironment(ctx, spec, env)
	return engine.Removed{Containers: orNone(r.Containers), Networks: orNone(r.Networks), Routes: orNone(r.Routes)}, err
}

func orNone(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// watch is how the command line shows an execution: the run id first on
// stdout, progress on stderr, node output with -v.
type watch struct {
	f     *Factory
	prog  *progress
	start time.Time
	// shown is the run id printed: a new run's comes as soon as it is
	// made (Created), any other's once it is owned (Started).
	shown string
	// fetch says what a new run still fetches, while it does.
	fetch *fetchWatch
}

func (f *Factory) watch() *watch {
	return &watch{f: f, prog: newProgress(f.IO.ErrOut, f.IO.ErrTTY && !f.Verbose, f.IO.ErrTTY && !f.NoColor), start: time.Now()}
}

func (w *watch) observer() engine.Observer {
	f := w.f
	o := engine.Observer{
		Created:  w.showID,
		Fetching: func(repos []string) { w.fetch = w.prog.fetching(repos) },
		Fetched: func(repo, head string, took time.Duration) {
			w.prog.mu.Lock()
			fmt.Fprintf(f.IO.ErrOut, "%s fetched %s at %.7s in %s\n", time.Now().UTC().Format("15:04:05"), repo, head, took.Round(time.Millisecond))
			w.prog.mu.Unlock()
			if w.fetch != nil {
				w.fetch.fetched(repo)
			}
		},
		Started: func(run *pipeline.Run) {
			w.fetch.done()
			w.prog.start(run)
			w.showID(run.ID)
		},
		Event:  w.prog.event,
		Notice: func(s string) { fmt.Fprintf(f.IO.ErrOut, "release: %s\n", s) },
	}
	if f.Verbose {
		o.Log = w.prog.log
	}
	return o
}

// showID prints the run id, once: first on stdout, where a script keeps
// it with head -n1, or on stderr with -o json.
func (w *watch) showID(id string) {
	if w.shown == id {
		return
	}
	w.shown = id
	if w.f.JSON() {
		fmt.Fprintf(w.f.IO.ErrOut, "run %s\n", id)
	} else {
		fmt.Fprintln(w.f.IO.Out, id)
	}
}

// report ends an execution on the command line: the final status line, the
// run as JSON with -o json, and what to do next.
func (w *watch) report(run *pipeline.Run, err error) error {
	f := w.f
	w.fetch.done()
	if err != nil && w.shown != "" && (run == nil || !w.ran()) {
		// A new run refused before it was recorded (a repo that cannot be
		// fetched, a held lock): its id, printed already, names no run.
		return fmt.Errorf("run %s not started: %w", w.shown, err)
	}
	if run == nil || !w.ran() {
		// Refused before this process owned the run: nothing ran.
		var cancelled *pipeline.CancelledError
		if errors.As(err, &cancelled) {
			fmt.Fprintf(f.IO.ErrOut, "release: %v\n", err)
			return silent(err)
		}
		return err
	}
	w.prog.done()
	fmt.Fprintf(f.IO.ErrOut, "run %s %s in %s\n", run.ID, run.Status, time.Since(w.start).Round(time.Millisecond))
	if f.JSON() {
		if jerr := writeJSON(f.IO.Out, newRunView(run)); jerr != nil {
			return errors.Join(err, jerr)
		}
	}
	var we *pipeline.WaitingError
	var fe *pipeline.FailedError
	var fenced *pipeline.FencedError
	var cancelled *pipeline.CancelledError
	switch {
	case errors.As(err, &we):
		for _, n := range we.Nodes {
			if reason, ok := we.Frozen[n]; ok {
				fmt.Fprintf(f.IO.ErrOut, "waiting: %s %s\n", n, reason)
				continue
			}
			fmt.Fprintf(f.IO.ErrOut, "waiting for approval: release approve %s %s\n", run.ID, n)
		}
		return silent(err)
	case errors.As(err, &fe):
		if hint := engine.NotResumable(fe); hint != "" {
			fmt.Fprintf(f.IO.ErrOut, "release: %v\n%s\n", err, hint)
		} else {
			fmt.Fprintf(f.IO.ErrOut, "release: %v%s\n", err, resumeHint(err, run.ID, "\n"))
		}
		return silent(err)
	case errors.Is(err, pipeline.ErrInterrupted):
		fmt.Fprintf(f.IO.ErrOut, "interrupted%s\n", resumeHint(err, run.ID, "; "))
		return silent(err)
	case errors.As(err, &fenced):
		fmt.Fprintf(f.IO.ErrOut, "release: %v%s\n", err, resumeHint(err, run.ID, "\n"))
		return silent(err)
	case errors.As(err, &cancelled):
		fmt.Fprintf(f.IO.ErrOut, "release: %v\n", err)
		return silent(err)
	}
	return err
}

// resumeHint is how the run is resumed, after sep; "" when err is an
// UnrecordedError, whose own lines (printed last, by main) end with it.
func resumeHint(err error, id, sep string) string {
	var unrecorded *pipeline.UnrecordedError
	if errors.As(err, &unrecorded) {
		return ""
	}
	return sep + "resume with: release resume " + id
}

// ran reports whether this process started the run's execution (its
// progress saw the run), as opposed to finding it cancelled on claiming.
func (w *watch) ran() bool {
	w.prog.mu.Lock()
	defer w.prog.mu.Unlock()
	return len(w.prog.order) > 0
}
