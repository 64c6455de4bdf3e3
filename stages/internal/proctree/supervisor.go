package proctree

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"os/signal"
	"syscall"
	"time"
)

// Main makes this process a supervisor when it was started as one by Run:
// it then runs the command it is sent and exits. In any other process it
// returns at once. A program whose commands Run supervises calls it before
// anything else in main (and a test binary in TestMain), since the
// supervisor is that program re-executed.
func Main() {
	if len(os.Args) < 2 || os.Args[1] != marker {
		hooked.Store(true)
		return
	}
	os.Exit(supervise(os.NewFile(controlFD, "control")))
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
const prSetChildSubreaper = 36

// supervisor is the state of the supervisor process once the command runs.
type supervisor struct {
	pgid     int
	self     int
	leader   chan syscall.WaitStatus // the command's own end
	gone     chan struct{}           // closed when this process has no child left
	requests chan request            // from the caller; closed when it is gone
	deadline *time.Timer             // at the last deadline the caller sent
}

// supervise is the supervisor process; it returns its exit status, the
// command's when it ran.
func supervise(ctl *os.File) int {
	// The command must not inherit the control socket.
	syscall.CloseOnExec(controlFD)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// Without it (a kernel before 3.4), orphans go to PID 1 and the group
	// is still killed; only those that left the group escape.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)

	dec, enc := json.NewDecoder(ctl), json.NewEncoder(ctl)
	var req request
	if err := dec.Decode(&req); err != nil || req.Op != opStart || req.Command == nil || len(req.Command.Argv) == 0 {
		fmt.Fprintf(os.Stderr, "%s is started by the exec stage, with a control socket on fd %d\n", marker, controlFD)
		return 2
	}
	if d := unixTime(req.Deadline); !d.IsZero() && !time.Now().Before(d) {
		_ = enc.Encode(report{Op: opEnd, End: &end{Reason: endDeadline}})
		return 1
	}
	if req.Caller != 0 && os.Getppid() != req.Caller {
		// The caller died between its request and this start (its
		// orphan was handed to another parent): nobody owns the run, so
		// nothing may start for it.
		return 137
	}
	c := req.Command
	cmd := osexec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Env, cmd.Dir = c.Env, c.Dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Pdeathsig: if this process is killed, the leader at least dies; the
	// rest of the group is killed by the next owner (see Kill).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = enc.Encode(report{Op: opError, Error: err.Error()})
		return 1
	}
	// The command is reaped by wait4(-1) below, with its orphans; never
	// by cmd.Wait.
	s := &supervisor{
		pgid: cmd.Process.Pid, self: os.Getpid(),
		leader: make(chan syscall.WaitStatus, 1), gone: make(chan struct{}),
		requests: make(chan request), deadline: time.NewTimer(0),
	}
	s.deadline.Stop()
	s.arm(req.Deadline)
	g := Group{ID: s.pgid, Boot: bootID(), Supervisor: s.self}
	g.Host, _ = os.Hostname()
	// Before the reaper runs, the leader is in /proc, if only as a zombie.
	if p, ok := readProc(s.pgid); ok {
		g.LeaderStart = p.start
	}
	go s.reap()
	_ = enc.Encode(report{Op: opStarted, Group: &g})
	go func() {
		defer close(s.requests)
		for {
			var r request
			if dec.Decode(&r) != nil {
				return
			}
			s.requests <- r
		}
	}()

	var e end
	for e.Reason == "" {
		select {
		case ws := <-s.leader:
			s.leader <- ws // for the status below
			e.Reason = endExited
			s.kill(0) // what the command left running
		case r, ok := <-s.requests:
			switch {
			case !ok:
				// The caller is gone, whatever killed it: nobody owns
				// the run here any more, and nobody reads a report.
				s.kill(0)
				return 137
			case r.Op == opStop:
				e.Reason = endStopped
				if s.kill(req.Grace) {
					e.Reason = endDeadline
				}
			case r.Op == opDeadline:
				s.arm(r.Deadline)
			}
		case <-s.deadline.C:
			e.Reason = endDeadline
			s.kill(0)
		case <-signals:
			e.Reason = endSignal
			if s.kill(req.Grace) {
				e.Reason = endDeadline
			}
		}
	}
	status := 137
	select {
	case ws := <-s.leader:
		switch {
		case ws.Exited():
			e.Code, status = ws.ExitStatus(), ws.ExitStatus()
		case ws.Signaled():
			e.Signal, status = int(ws.Signal()), 128+int(ws.Signal())
		}
	default:
	}
	_ = enc.Encode(report{Op: opEnd, End: &e})
	return status
}

// arm sets the deadline timer to ns, Unix nanoseconds; 0 means none.
func (s *supervisor) arm(ns int64) {
	s.deadline.Stop()
	if d := unixTime(ns); !d.IsZero() {
		s.deadline.Reset(time.Until(d))
	}
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// reap waits for every child: the command, and the orphans of its tree
// that this subreaper inherits. It closes gone when none is left.
func (s *supervisor) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
		case err != nil: // ECHILD
			close(s.gone)
			return
		case pid == s.pgid:
			s.leader <- ws
		}
	}
}

// kill ends the tree and returns once this process has no child left and
// the group no process. With a grace period, SIGTERM goes first, to the
// group and to every child of this process that left it, and SIGKILL when
// the grace period ends, or sooner: at the deadline (kill then reports
// true) or when the caller is gone. Without, SIGKILL at once.
//
// A process that left the group and whose parent is still alive is no
// child of this process yet: it becomes one when its parent dies of the
// SIGTERM. So SIGTERM goes to every process of the tree that left the
// group, wherever it hangs, and during the grace period to each one that
// appears, once each.
func (s *supervisor) kill(grace time.Duration) (atDeadline bool) {
	if grace > 0 {
		_ = syscall.Kill(-s.pgid, syscall.SIGTERM)
		termed := map[procID]bool{}
		s.termLeavers(termed)
		over := time.After(grace)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-s.gone:
				break wait
			case <-over:
				break wait
			case <-tick.C:
				s.termLeavers(termed)
			case <-s.deadline.C:
				atDeadline = true
				break wait
			case r, ok := <-s.requests:
				if !ok {
					break wait
				}
				if r.Op == opDeadline {
					s.arm(r.Deadline)
				}
			}
		}
	}
	for {
		s.signal(syscall.SIGKILL)
		select {
		case <-s.gone:
			if !groupLeft(s.pgid) {
				return atDeadline
			}
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procID names a process across pid reuse: its pid and start time.
type procID struct {
	pid   int
	start uint64
}

// termLeavers sends SIGTERM to each process of the tree under this one
// that left the group and is not in termed yet, and notes it there.
func (s *supervisor) termLeavers(termed map[procID]bool) {
	ps := procs()
	parent := make(map[int]int, len(ps))
	for _, p := range ps {
		parent[p.pid] = p.ppid
	}
	under := func(pid int) bool {
		for range len(ps) { // a bound, should the table change meanwhile
			pid = parent[pid]
			if pid == s.self {
				return true
			}
			if pid <= 1 {
				return false
			}
		}
		return false
	}
	for _, p := range ps {
		id := procID{p.pid, p.start}
		if p.pgrp == s.pgid || p.zombie || termed[id] || !under(p.pid) {
			continue
		}
		termed[id] = true
		_ = syscall.Kill(p.pid, syscall.SIGTERM)
	}
}

func (s *supervisor) signal(sig syscall.Signal) {
	_ = syscall.Kill(-s.pgid, sig)
	for _, p := range procs() {
		if p.ppid == s.self && p.pgrp != s.pgid {
			_ = syscall.Kill(p.pid, sig)
		}
	}
}
