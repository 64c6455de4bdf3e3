package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// DoctorOptions are the inputs of `release doctor`.
type DoctorOptions struct {
	f *Factory
}

// NewCmdDoctor builds `release doctor`.
func NewCmdDoctor(f *Factory, runF func(*DoctorOptions) error) *cobra.Command {
	opts := &DoctorOptions{f: f}
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that everything the pipeline uses answers: store, engines, registry, remotes, tokens",
		Long: `Check the outside world the pipeline depends on, each with a verdict: the state
store, every Docker host, the registry with the credentials at hand, every git remote
with its token or key (and, for git-tag, whether it would take a tag push: asked
without pushing), the Caddy admin APIs, GitHub with its token. Nothing is
changed. Exits 1 when any check fails; secrets are never printed.

The checks run side by side, each within 10s and the pipeline file's
timeouts; doctor returns within 12s whatever the peers do, reporting a
check that has not answered by then as failed.`,
		Example: `  release doctor
  release doctor -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return doctorRun(cmd.Context(), opts)
		},
	}
}

type checkView struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// How long doctor waits. Each check has checkBound; the command returns
// at doctorBound whatever the checks do, reporting those still running as
// failed, so a check that ignores its context cannot hold it.
const (
	checkBound  = 10 * time.Second
	doctorBound = 12 * time.Second
)

// pendingCheck is one check on its way: done is closed once name and err
// are final.
type pendingCheck struct {
	name string
	err  error
	done chan struct{}
}

// checkGroup is the checks of one stage kind, known once its Doctor
// returned (done closed).
type checkGroup struct {
	uses   string
	checks []*pendingCheck
	done   chan struct{}
}

// start runs c in its own goroutine, within checkBound of ctx.
func start(ctx context.Context, c stages.Check) *pendingCheck {
	pc := &pendingCheck{name: c.Name, done: make(chan struct{})}
	if c.Run == nil {
		pc.err = c.Err
		close(pc.done)
		return pc
	}
	go func() {
		defer close(pc.done)
		ctx, cancel := context.WithTimeout(ctx, checkBound)
		defer cancel()
		pc.err = timedOut(ctx, c.Run(ctx))
	}()
	return pc
}

// timedOut names the bound in the error of a check that ran out of time.
func timedOut(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, stages.ErrNotChecked) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s: %w", checkBound, err)
	}
	return err
}

func doctorRun(ctx context.Context, opts *DoctorOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	expired := make(chan struct{})
	timer := time.AfterFunc(doctorBound, func() { close(expired) })
	defer timer.Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // what is still running when doctor returns is told to stop

	dsn, dsnErr := f.StateDSN()
	var notCreated bool // written by the store check before it is done
	storeCheck := start(ctx, stages.Check{Name: "state store " + store.Redact(dsn), Run: func(ctx context.Context) error {
		if dsnErr != nil {
			return dsnErr
		}
		created, err := checkStore(ctx, dsn)
		notCreated = err == nil && !created
		return err
	}})
	storeGroup := &checkGroup{uses: "state store", checks: []*pendingCheck{storeCheck}, done: make(chan struct{})}
	close(storeGroup.done)
	groups := []*checkGroup{storeGroup}

	seen := map[string]bool{}
	for _, name := range sortedKeys(p.Stages) {
		st := p.Stages[name]
		d, ok := st.Impl.(stages.Doctor)
		if !ok || seen[st.Uses] {
			continue
		}
		seen[st.Uses] = true
		g := &checkGroup{uses: st.Uses, done: make(chan struct{})}
		groups = append(groups, g)
		go func() {
			defer close(g.done)
			// A Doctor that does its checks before it returns (rather than
			// in each Check's Run) gets the bound of one check for all.
			dctx, dcancel := context.WithTimeout(ctx, checkBound)
			defer dcancel()
			for _, c := range d.Doctor(dctx, p.Spec) {
				if c.Run == nil {
					c.Err = timedOut(dctx, c.Err)
				}
				g.checks = append(g.checks, start(ctx, c))
			}
		}()
	}

	// Collect in order: the verdict of each check, or "no answer" for one
	// still running at the bound.
	noAnswer := fmt.Errorf("no answer within %s", doctorBound)
	finished := func(done chan struct{}) bool {
		select {
		case <-done:
			return true
		case <-expired:
		}
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	var views []checkView
	failed := 0
	done := map[string]bool{}
	add := func(name string, err error) {
		if done[name] || errors.Is(err, stages.ErrNotChecked) {
			return
		}
		done[name] = true
		v := checkView{Name: name, OK: err == nil}
		if err != nil {
			// One line per check: a server's answer quoted in an error
			// may span lines.
			v.Error = strings.Join(strings.Fields(err.Error()), " ")
			failed++
		}
		views = append(views, v)
	}
	for _, g := range groups {
		if !finished(g.done) {
			add("checks of the "+g.uses+" stage", noAnswer)
			continue
		}
		for _, c := range g.checks {
			if !finished(c.done) {
				add(c.name, noAnswer)
				continue
			}
			name := c.name
			if c == storeCheck && notCreated {
				name += " (not created yet: the first run creates it)"
			}
			add(name, c.err)
		}
	}

	if f.JSON() {
		if err := writeJSON(f.IO.Out, map[string]any{"checks": views, "failed": failed}); err != nil {
			return err
		}
	} else {
		for _, v := range views {
			if v.OK {
				fmt.Fprintf(f.IO.Out, "ok    %s\n", v.Name)
			} else {
				fmt.Fprintf(f.IO.Out, "FAIL  %s: %s\n", v.Name, v.Error)
			}
		}
	}
	if failed > 0 {
		return silent(fmt.Errorf("%d of %d checks failed", failed, len(views)))
	}
	return nil
}

// checkStore opens the state store at dsn and closes it again; created
// false says an SQLite file that does not exist yet, which doctor does
// not create. It opens a store of its own rather than the factory's, so a
// store that never answers holds nothing the command still needs when it
// returns at its bound.
func checkStore(ctx context.Context, dsn string) (created bool, err error) {
	loc, err := store.Parse(dsn)
	if err != nil {
		return false, err
	}
	if loc.Kind == store.SQLite {
		if _, err := os.Stat(dsn); err != nil {
			return false, nil
		}
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return true, err
	}
	db.Close()
	return true, nil
}
