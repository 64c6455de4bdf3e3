package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
	"golang.org/x/term"
)

// IOStreams are the command's standard streams. Tests give it buffers.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// OutTTY and ErrTTY say whether Out and ErrOut are terminals: tables and
	// live progress there, plain lines when piped.
	OutTTY, ErrTTY bool
}

// SystemIO returns the process's streams.
func SystemIO() *IOStreams {
	return &IOStreams{
		In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		OutTTY: term.IsTerminal(int(os.Stdout.Fd())),
		ErrTTY: term.IsTerminal(int(os.Stderr.Fd())),
	}
}

// Factory holds the global flags and builds the clients commands need,
// lazily, so a command that needs no store never opens one.
type Factory struct {
	IO       *IOStreams
	Registry func() *stages.Registry
	Getenv   func(string) string

	File    string // -f, --file
	State   string // --state
	Output  string // -o, --output
	NoColor bool
	Verbose bool

	pipeline *pipeline.Pipeline
	store    pipeline.Store
}

// JSON reports whether -o json was asked for.
func (f *Factory) JSON() bool { return f.Output == "json" }

func (f *Factory) checkOutput() error {
	switch f.Output {
	case "text", "json":
		return nil
	}
	return usageErrorf("-o %q: want text or json", f.Output)
}

// FileName is the pipeline file: --file, RELEASE_FILE, or pipeline.yaml.
func (f *Factory) FileName() string {
	if f.File != "" {
		return f.File
	}
	if v := f.Getenv("RELEASE_FILE"); v != "" {
		return v
	}
	return "pipeline.yaml"
}

// Pipeline loads and validates the pipeline file once.
func (f *Factory) Pipeline() (*pipeline.Pipeline, error) {
	if f.pipeline != nil {
		return f.pipeline, nil
	}
	p, err := pipeline.Load(f.FileName(), f.Registry())
	if err != nil {
		var errs pipeline.Errors
		if errors.As(err, &errs) {
			return nil, &codedError{code: exitUsage, err: err}
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, &codedError{code: exitUsage, err: fmt.Errorf("%s: no pipeline file here (use -f FILE or RELEASE_FILE)", f.FileName())}
		}
		return nil, err
	}
	f.pipeline = p
	return p, nil
}

// Plan loads the pipeline and expands its slice into a plan.
func (f *Factory) Plan(slice pipeline.Slice) (*pipeline.Pipeline, *pipeline.Plan, error) {
	p, err := f.Pipeline()
	if err != nil {
		return nil, nil, err
	}
	plan, err := p.Plan(slice)
	if err != nil {
		return nil, nil, err
	}
	return p, plan, nil
}

// Run opens the store and reads a run by id or unique prefix.
func (f *Factory) Run(ctx context.Context, id string) (pipeline.Store, *pipeline.Run, error) {
	st, err := f.Store(ctx)
	if err != nil {
		return nil, nil, err
	}
	r, err := st.Run(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return st, r, nil
}

// StateDSN is the state store: --state, RELEASE_STATE, or the pipeline
// file's state (default .release/state.db beside it). It may hold a
// password: name it in messages with store.Redact.
func (f *Factory) StateDSN() (string, error) {
	if f.State != "" {
		return f.State, nil
	}
	if v := f.Getenv("RELEASE_STATE"); v != "" {
		return v, nil
	}
	p, err := f.Pipeline()
	if err != nil {
		return "", err
	}
	return p.State, nil
}

// WorkDir is where stages keep caches: the directory of the state file, or
// .release beside the pipeline file for a remote store.
func (f *Factory) WorkDir() string {
	dsn, err := f.StateDSN()
	if loc, perr := store.Parse(dsn); err == nil && perr == nil && loc.Kind == store.SQLite {
		return filepath.Dir(dsn)
	}
	if p, err := f.Pipeline(); err == nil {
		return filepath.Join(p.Spec.Dir, ".release")
	}
	return ".release"
}

// Store opens the state store once.
func (f *Factory) Store(ctx context.Context) (pipeline.Store, error) {
	if f.store != nil {
		return f.store, nil
	}
	dsn, err := f.StateDSN()
	if err != nil {
		return nil, err
	}
	db, err := store.OpenWith(ctx, dsn, f.storeOptions())
	if errors.Is(err, store.ErrRefused) {
		return nil, &codedError{code: exitUsage, err: err}
	}
	if err != nil {
		return nil, err
	}
	s, err := injectFaults(db, f.Getenv, f.IO.ErrOut)
	if err != nil {
		db.Close()
		return nil, err
	}
	f.store = s
	return s, nil
}

// StoreIfExists opens the store only when it already exists, for commands
// that must not create anything (plan).
func (f *Factory) StoreIfExists(ctx context.Context) (pipeline.Store, error) {
	dsn, err := f.StateDSN()
	if err != nil {
		return nil, err
	}
	loc, err := store.Parse(dsn)
	if err != nil {
		return nil, &codedError{code: exitUsage, err: err}
	}
	if loc.Kind == store.SQLite {
		if _, err := os.Stat(dsn); err != nil {
			return nil, nil
		}
	}
	return f.Store(ctx)
}

// Close releases what the factory opened.
func (f *Factory) Close() {
	if f.store != nil {
		f.store.Close()
	}
}

// LeaseTTL is how long a run's claim and environment locks outlive a
// process that stopped renewing them: RELEASE_LEASE_TTL (a Go duration,
// at least 1s), else the engine's default.
func (f *Factory) LeaseTTL() time.Duration {
	d, err := time.ParseDuration(f.Getenv("RELEASE_LEASE_TTL"))
	if err != nil || d < time.Second {
		return 0
	}
	return d
}

// User names who approves or starts things: RELEASE_USER, else the login.
func (f *Factory) User() string {
	if v := f.Getenv("RELEASE_USER"); v != "" {
		return v
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if v := f.Getenv("USER"); v != "" {
		return v
	}
	return "unknown"
}
