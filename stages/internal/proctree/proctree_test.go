package proctree

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	Main()
	// Under -race, every process sleeps 1 s at exit by default; the
	// supervisors are this binary, and the tests time their end.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

// Run reports how the command ended, and returns only when no process of
// its tree is left: not the group's, not one that left the group.
func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		script   string        // for sh -c; $OUT is a file of the test
		deadline time.Duration // from the start; 0: none
		cancel   time.Duration // cancel the context this long after the start; 0: never
		grace    time.Duration
		want     error
		wantOut  string
		within   time.Duration
	}{
		{name: "exit 0", script: "echo out; echo err >&2", wantOut: "out\nerr\n", within: time.Second},
		{name: "exit 3", script: "exit 3", want: &ExitError{Code: 3}, within: time.Second},
		{name: "killed by a signal", script: "kill -9 $$", want: &ExitError{Signal: syscall.SIGKILL}, within: time.Second},
		{name: "a job left behind is killed", script: "sleep 30 & echo $! > $OUT", within: time.Second},
		{name: "a job that left the group is killed", script: "setsid sleep 30 & echo $! > $OUT", within: time.Second},
		{name: "a job that left the group, of a command that goes on, is killed", script: "setsid sleep 30 & echo $! > $OUT; sleep 30", cancel: 300 * time.Millisecond, want: context.Canceled, within: time.Second},
		{name: "SIGTERM on cancel", script: "sleep 30", cancel: 300 * time.Millisecond, grace: 5 * time.Second, want: context.Canceled, within: time.Second},
		{name: "SIGKILL after the grace", script: `trap "" TERM; sleep 30 & echo $! > $OUT; wait`, cancel: 300 * time.Millisecond, grace: 500 * time.Millisecond, want: context.Canceled, within: 1500 * time.Millisecond},
		{name: "deadline during the grace", script: `trap "" TERM; sleep 30 & echo $! > $OUT; wait`, cancel: 300 * time.Millisecond, grace: 5 * time.Second, deadline: 600 * time.Millisecond, want: ErrDeadline, within: time.Second},
		{name: "deadline", script: "sleep 30 & echo $! > $OUT; wait", deadline: 300 * time.Millisecond, want: ErrDeadline, within: time.Second},
		{name: "deadline passed before the start", script: "echo started > $OUT", deadline: -time.Second, want: ErrDeadline, within: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel > 0 {
				time.AfterFunc(tt.cancel, cancel)
			}
			start := time.Now()
			var deadline func() time.Time
			if tt.deadline != 0 {
				d := start.Add(tt.deadline)
				deadline = func() time.Time { return d }
			}
			var log bytes.Buffer
			var group Group
			err := Run(ctx, Command{Argv: []string{"sh", "-c", tt.script}, Env: append(os.Environ(), "OUT="+out)},
				Options{Output: &log, Deadline: deadline, Grace: tt.grace, Started: func(g Group) error { group = g; return nil }})
			took := time.Since(start)
			t.Logf("returned after %v: %v", took.Round(time.Millisecond), err)
			if diff := cmp.Diff(tt.want, err, cmp.Comparer(func(a, b error) bool { return errors.Is(a, b) || a.Error() == b.Error() })); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if log.String() != tt.wantOut {
				t.Errorf("output = %q, want %q", log.String(), tt.wantOut)
			}
			if took > tt.within {
				t.Errorf("returned %v after the start, want within %v", took, tt.within)
			}
			if tt.deadline < 0 {
				if group.ID != 0 {
					t.Errorf("the command started (group %d) after its deadline", group.ID)
				}
				if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the command ran after its deadline: %v", err)
				}
				return
			}
			if groupLeft(group.ID) {
				t.Errorf("group %d has processes left", group.ID)
			}
			if b, err := os.ReadFile(out); err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				if p, ok := readProc(pid); ok && !p.zombie {
					t.Errorf("the job %d (group %d) still runs", pid, p.pgrp)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
	}
}

// A command that cannot start is a StartError, with os/exec's words.
func TestStartError(t *testing.T) {
	err := Run(context.Background(), Command{Argv: []string{"no-such-program-here"}}, Options{})
	var se *StartError
	if !errors.As(err, &se) || se.Error() != `exec: "no-such-program-here": executable file not found in $PATH` {
		t.Errorf("error = %#v, want a StartError", err)
	}
}

// Kill kills a recorded group that is still there, and leaves alone one
// whose number names another group now.
func TestKill(t *testing.T) {
	host, _ := os.Hostname()
	for _, tt := range []struct {
		name   string
		group  func(leader proc) Group
		killed bool
	}{
		{"the recorded group", func(l proc) Group { return Group{ID: l.pid, Host: host, Boot: bootID(), LeaderStart: l.start} }, true},
		{"a leader that started at another time", func(l proc) Group { return Group{ID: l.pid, Host: host, Boot: bootID(), LeaderStart: l.start + 1} }, false},
		{"another boot", func(l proc) Group { return Group{ID: l.pid, Host: host, Boot: "another", LeaderStart: l.start} }, false},
		{"another host", func(l proc) Group { return Group{ID: l.pid, Host: "elsewhere", Boot: bootID(), LeaderStart: l.start} }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := osexec.Command("sleep", "30")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ended := make(chan struct{})
			go func() { _ = cmd.Wait(); close(ended) }()
			defer func() { _ = cmd.Process.Kill(); <-ended }()
			leader, ok := readProc(cmd.Process.Pid)
			if !ok {
				t.Fatal("the leader is not in /proc")
			}
			killed, err := Kill(context.Background(), tt.group(leader))
			if killed != tt.killed || err != nil {
				t.Errorf("Kill = %v, %v; want %v, nil", killed, err, tt.killed)
			}
			if groupLeft(leader.pid) == tt.killed {
				t.Errorf("group %d left: %v, want %v", leader.pid, !tt.killed, !tt.killed)
			}
		})
	}
}

// When the supervisor alone is killed, the leader dies with it and Run
// kills the rest of the group before it returns.
func TestSupervisorKilled(t *testing.T) {
	var group Group
	err := Run(context.Background(), Command{Argv: []string{"sh", "-c", `sh -c "sleep 30; echo late"; echo late`}},
		Options{Started: func(g Group) error {
			group = g
			// The grandchild sleeps once the inner shell has a child.
			for i := 0; i < 400 && !hasChild(g.ID); i++ {
				time.Sleep(5 * time.Millisecond)
			}
			return syscall.Kill(g.Supervisor, syscall.SIGKILL)
		}})
	if err == nil || !strings.Contains(err.Error(), "ended without a report") {
		t.Errorf("error = %v, want the supervisor's end without a report", err)
	}
	if groupLeft(group.ID) {
		t.Errorf("group %d has processes left", group.ID)
	}
}

// hasChild reports whether a process of group pgid other than its leader
// has a child: the tree is two deep.
func hasChild(pgid int) bool {
	for _, p := range procs() {
		if pp, ok := readProc(p.ppid); ok && p.pgrp == pgid && pp.pgrp == pgid && pp.pid != pgid {
			return true
		}
	}
	return false
}
