// Package proctree runs a command so that its whole process tree ends with
// its run, grandchildren included, whatever happens to the process that
// started it.
//
// Between the caller and the command sits a supervisor: this same program,
// re-executed through /proc/self/exe with a marker argument, which Main
// recognises. The supervisor is a child subreaper (so orphaned descendants
// become its children and it reaps them; PID 1 need not), starts the
// command in a process group of its own, and ends that group, and every
// descendant that left it, in one of four ways:
//
//  1. the command exits: what it left running is killed (SIGKILL);
//  2. the caller asks it to stop (its context is done): SIGTERM, then
//     SIGKILL after a grace period;
//  3. the caller dies, whatever the signal: its end of the control socket
//     closes, and the supervisor kills the tree at once;
//  4. the deadline the caller last sent passes (the caller stopped
//     extending it, for example because it was SIGSTOPped past its lease):
//     the supervisor kills the tree at once and Run returns ErrDeadline.
//
// The supervisor lives in its own process group too, so a signal to the
// caller's group (a terminal's ^C or ^Z, kill -9 -PGID) does not reach it
// and it can still clean up.
package proctree

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
)

// marker is argv[1] of a supervisor process.
const marker = "__release-exec-supervisor"

// controlFD is the supervisor's end of the control socket.
const controlFD = 3

// DefaultGrace is how long a stopped command has between SIGTERM and
// SIGKILL.
const DefaultGrace = 5 * time.Second

// hooked is set by Main in a process that is not a supervisor: it has
// called Main first thing, so re-executing it as a supervisor works.
var hooked atomic.Bool

// Command is a program to run. Argv[0] is looked up in PATH unless it
// contains a slash, as os/exec does; a relative Argv[0] with a slash is
// relative to Dir.
type Command struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
}

// supervisorEnv is the environment of the supervisor of a command that
// runs with env: env, not this process's, which the command could read from
// /proc/$PPID/environ; plus the Go runtime's settings of this process for
// race and coverage builds, which the supervisor does not hand on.
func supervisorEnv(env []string) []string {
	out := slices.Clip(env)
	for _, k := range []string{"GORACE", "GOCOVERDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// Options are what Run needs besides the command.
type Options struct {
	// Output receives the command's stdout and stderr, in one stream.
	Output io.Writer
	// Deadline is read before the start and every 200 ms after: when the
	// supervisor's clock reaches the last value it was sent, it kills the
	// tree. Zero, or a nil func, means no deadline.
	Deadline func() time.Time
	// Started, if set, is called once the command runs, with its group. An
	// error stops the command, and Run returns it.
	Started func(Group) error
	// Grace is the time between SIGTERM and SIGKILL when the context is
	// done; DefaultGrace when zero.
	Grace time.Duration
}

// Group is the process group a supervisor ran a command in, with what
// tells it apart from a later group that reuses its number.
type Group struct {
	ID          int    `json:"id"` // the group's id, its leader's pid
	Host        string `json:"host"`
	Boot        string `json:"boot"`        // the kernel's boot id: pids start over at boot
	LeaderStart uint64 `json:"leaderStart"` // the leader's start, in clock ticks after boot
	Supervisor  int    `json:"supervisor"`  // the supervisor's pid
}

// ErrDeadline is returned by Run when the supervisor killed the tree
// because the deadline passed.
var ErrDeadline = errors.New("the deadline passed")

// StartError is returned by Run when the command could not start.
type StartError struct{ Msg string }

func (e *StartError) Error() string { return e.Msg }

// ExitError is returned by Run when the command exited with a status other
// than 0, or was killed by a signal.
type ExitError struct {
	Code   int            // its exit status, when it exited
	Signal syscall.Signal // the signal that ended it, or 0
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("killed by signal %d (%v)", int(e.Signal), e.Signal)
	}
	return fmt.Sprintf("exited with status %d", e.Code)
}

// The control socket carries one JSON object a line each way.
type request struct {
	Op       string        `json:"op"` // start, deadline, stop
	Command  *Command      `json:"command,omitempty"`
	Grace    time.Duration `json:"grace,omitempty"`
	Deadline int64         `json:"deadline"` // Unix ns; 0: none
	// Caller is the pid of the process that asks for the start: the
	// supervisor starts nothing once it is not its parent any more.
	Caller int `json:"caller,omitempty"`
}

type report struct {
	Op    string `json:"op"` // started, error, end
	Group *Group `json:"group,omitempty"`
	Error string `json:"error,omitempty"`
	End   *end   `json:"end,omitempty"`
}

// end says how a supervised run ended.
type end struct {
	Reason string `json:"reason"` // exited, deadline, stopped, signal
	Code   int    `json:"code"`
	Signal int    `json:"signal"`
}

const (
	opStart, opDeadline, opStop = "start", "deadline", "stop"
	opStarted, opError, opEnd   = "started", "error", "end"

	endExited, endDeadline, endStopped, endSignal = "exited", "deadline", "stopped", "signal"
)

// Run runs c under a supervisor and returns once the command and every
// process it started have ended. A done ctx stops the tree (SIGTERM, then
// SIGKILL after the grace period) and Run returns ctx.Err().
func Run(ctx context.Context, c Command, o Options) error {
	if !hooked.Load() {
		return errors.New("cannot supervise the command: this program does not call exec.Supervise first in main (or TestMain)")
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	// Ours is pollable, so that closing it ends a pending read.
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return fmt.Errorf("control socket: %w", err)
	}
	ctl := os.NewFile(uintptr(fds[0]), "supervisor control")
	defer ctl.Close()
	theirs := os.NewFile(uintptr(fds[1]), "supervisor control")
	// /proc/self/exe is this program even if its file was replaced since.
	sup := osexec.Command("/proc/self/exe", marker)
	// testscript dispatches on argv[0]: keep the one this process got.
	sup.Args[0] = os.Args[0]
	sup.Stdout, sup.Stderr = o.Output, o.Output
	sup.ExtraFiles = []*os.File{theirs}
	sup.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.Env != nil {
		sup.Env = supervisorEnv(c.Env)
	}
	// The tree is gone when the supervisor exits; whatever still holds
	// the output pipe is none of the run's business.
	sup.WaitDelay = time.Second
	err = sup.Start()
	theirs.Close()
	if err != nil {
		return fmt.Errorf("start the supervisor: %w", err)
	}
	grace := o.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	deadline := func() int64 {
		if o.Deadline == nil {
			return 0
		}
		if d := o.Deadline(); !d.IsZero() {
			return d.UnixNano()
		}
		return 0
	}
	enc := json.NewEncoder(ctl)
	last := deadline()
	if err := enc.Encode(request{Op: opStart, Command: &c, Grace: grace, Deadline: last, Caller: os.Getpid()}); err != nil {
		_ = sup.Process.Kill()
		_ = sup.Wait()
		return fmt.Errorf("send the command to its supervisor: %w", err)
	}

	reports := make(chan report)
	go func() {
		defer close(reports)
		dec := json.NewDecoder(ctl)
		for {
			var r report
			if dec.Decode(&r) != nil {
				return
			}
			reports <- r
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- sup.Wait() }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()

	var (
		group    *Group
		startErr string
		fin      *end
		failure  error
		waitErr  error
		waited   bool
		stopping bool
		force    <-chan time.Time
	)
	done := ctx.Done()
	stop := func() {
		if stopping {
			return
		}
		stopping = true
		_ = enc.Encode(request{Op: opStop})
		// A supervisor that does not end the tree in time is killed, and
		// the tree with it.
		force = time.After(grace + 5*time.Second)
	}
	for reports != nil || !waited {
		select {
		case r, ok := <-reports:
			if !ok {
				reports = nil
				continue
			}
			switch r.Op {
			case opStarted:
				if r.Group == nil {
					continue
				}
				g := *r.Group
				group = &g
				if o.Started != nil {
					if err := o.Started(g); err != nil {
						failure = err
						stop()
					}
				}
			case opError:
				startErr = r.Error
			case opEnd:
				fin = r.End
			}
		case waitErr = <-exited:
			waited, exited = true, nil
		case <-tick.C:
			if d := deadline(); d != last {
				last = d
				_ = enc.Encode(request{Op: opDeadline, Deadline: d})
			}
		case <-done:
			done = nil
			stop()
		case <-force:
			force = nil
			if group != nil {
				_ = syscall.Kill(-group.ID, syscall.SIGKILL)
			}
			_ = sup.Process.Kill()
		}
	}

	switch {
	case startErr != "":
		return &StartError{Msg: startErr}
	case fin == nil:
		err := fmt.Errorf("supervisor %d ended without a report: %v", sup.Process.Pid, waitErr)
		if group != nil {
			// Killed on its own: the leader died with it, but the rest
			// of the group may not have.
			if _, kerr := Kill(context.Background(), *group); kerr != nil {
				err = errors.Join(err, kerr)
			}
		}
		return err
	case fin.Reason == endDeadline:
		return ErrDeadline
	case failure != nil:
		return failure
	case fin.Reason == endStopped && ctx.Err() != nil:
		return ctx.Err()
	case fin.Reason == endSignal:
		return fmt.Errorf("supervisor %d was stopped by a signal", sup.Process.Pid)
	case fin.Code != 0 || fin.Signal != 0:
		return &ExitError{Code: fin.Code, Signal: syscall.Signal(fin.Signal)}
	}
	return nil
}
