package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// ServeOptions are the inputs of `release serve`.
type ServeOptions struct {
	f        *Factory
	Addr     string
	Parallel int
	// Inspect is how often the dashboard's health of the live containers
	// is refreshed; 0 turns live inspection off.
	Inspect time.Duration
}

// NewCmdServe builds `release serve`.
func NewCmdServe(f *Factory, runF func(*ServeOptions) error) *cobra.Command {
	opts := &ServeOptions{f: f}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the schedules, serve the HTTP API and the web dashboard",
		Long: `Run the pipeline file's schedules, and serve a JSON API and a dashboard on --addr.

Each fire of a schedule starts a run with the schedule's bump. When no repo has a
commit since the last release, or a freeze window covers an environment, the fire
records a skipped run with the reason instead. Several serve processes may share one
store: each fire is claimed in the store, so it starts once.

The API answers reads to anyone who can reach --addr (127.0.0.1 by default);
requests that change state (approve, promote) need Authorization: Bearer TOKEN with
the token in RELEASE_SERVE_TOKEN, and are refused with 401 when it is unset.

GET /api/environments and the dashboard show each environment of the file, then
each instance of a template (template, network, listen, createdAt, expires, as
release env list has them); a branch deployment shows the refs it built and the
commit of every repo (refs, commits).

SIGTERM or SIGINT stops the schedules and the listener, cancels the runs in flight
(their nodes are recorded cancelled; release resume continues them) and exits 0.`,
		Example: `  RELEASE_SERVE_TOKEN=$(cat ~/.release-token) release serve
  release serve --addr 127.0.0.1:9000 --state postgres://release@db/release`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return serveRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Addr, "addr", "127.0.0.1:8780", "listen address")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "nodes of one run at once (0: every node of the run, up to 32)")
	cmd.Flags().DurationVar(&opts.Inspect, "inspect", 30*time.Second, "refresh the live containers' health this often (0: never)")
	return cmd
}

// server is one `release serve`: its schedules, its API and its runs.
type server struct {
	f        *Factory // the command's: file, state and registry
	p        *pipeline.Pipeline
	st       pipeline.Store
	e        *engine.Engine // every run, approval and promotion goes through it
	log      *slog.Logger
	token    string
	holder   string           // who claims schedule fires in the store
	now      func() time.Time // the scheduler's clock
	parallel int              // nodes of one run at once; 0 sizes it for the run (engine.Exec)

	runs sync.WaitGroup // runs started by the server

	mu     sync.Mutex
	live   map[string]liveEnv // the last inspection of each environment
	active map[string]bool    // runs executing in this process
}

// claimTTL is how long a claimed fire stays claimed: far longer than any
// clock skew between two servers, so a claim is never taken twice.
const claimTTL = 400 * 24 * time.Hour

func newServer(ctx context.Context, f *Factory, logOut io.Writer) (*server, error) {
	p, err := f.Pipeline()
	if err != nil {
		return nil, err
	}
	st, err := f.Store(ctx)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &server{
		f: f, p: p, st: st,
		log:    slog.New(slog.NewTextHandler(logOut, nil)),
		token:  f.Getenv("RELEASE_SERVE_TOKEN"),
		holder: fmt.Sprintf("serve %s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:])),
		now:    time.Now,
		live:   map[string]liveEnv{},
	}
	s.e = f.engineFor(p, st)
	// The scheduler's clock, read at each call: tests set s.now.
	s.e.Now = func() time.Time { return s.now() }
	return s, nil
}

func serveRun(ctx context.Context, opts *ServeOptions) error {
	f := opts.f
	s, err := newServer(ctx, f, f.IO.ErrOut)
	if err != nil {
		return err
	}
	if opts.Parallel > 0 {
		s.parallel = opts.Parallel
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.Addr, err)
	}
	// Runs live in a context of their own: cancelled at shutdown, after
	// the listener stopped taking new work.
	runCtx, stopRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRuns()
	srv := &http.Server{
		Handler:           s.handler(runCtx),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
		s.log.Warn("listening beyond this machine: runs, environments and logs are readable without a token", "addr", ln.Addr().String())
	}
	if s.token == "" {
		s.log.Warn("RELEASE_SERVE_TOKEN is not set: the API is read-only, approve and promote answer 401")
	}
	s.log.Info("serving", "addr", "http://"+ln.Addr().String()+"/", "pipeline", s.p.Spec.Name, "schedules", len(s.p.Schedules))
	fmt.Fprintf(f.IO.Out, "http://%s/\n", ln.Addr())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	scheduled := make(chan struct{})
	go func() {
		defer close(scheduled)
		s.schedule(ctx, runCtx)
	}()
	if opts.Inspect > 0 {
		go s.inspectEvery(ctx, opts.Inspect)
	}

	select {
	case err := <-served:
		stopRuns()
		s.runs.Wait()
		return fmt.Errorf("serve on %s: %w", opts.Addr, err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: no new runs; runs in flight stop at their next safe point")
	<-scheduled
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	herr := srv.Shutdown(shutCtx)
	stopRuns()
	s.runs.Wait()
	s.log.Info("stopped")
	if herr != nil && !errors.Is(herr, context.DeadlineExceeded) {
		return fmt.Errorf("stop the HTTP server: %w", herr)
	}
	return nil
}

// goRun runs work in the background, counted, so shutdown waits for it.
func (s *server) goRun(work func()) {
	s.runs.Add(1)
	go func() {
		defer s.runs.Done()
		work()
	}()
}
