package proctree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kill kills what is left of g, a group recorded by an earlier run whose
// supervisor may have died with it, and waits until no process of it is
// left (zombies aside: they act no more, and a PID 1 that does not reap
// keeps them). It does nothing unless g ran on this host since its last
// boot and its number still names it: the group has processes, and its
// leader, if still there, started when the recorded one did. It reports
// whether there was anything to kill.
func Kill(ctx context.Context, g Group) (bool, error) {
	if host, _ := os.Hostname(); g.ID <= 1 || g.Host != host || g.Boot != bootID() || !groupLeft(g.ID) {
		return false, nil
	}
	if p, ok := readProc(g.ID); ok && g.LeaderStart != 0 && p.start != g.LeaderStart {
		return false, nil // another process has the number now
	}
	giveUp := time.Now().Add(10 * time.Second)
	for {
		if err := syscall.Kill(-g.ID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return true, fmt.Errorf("kill process group %d: %w", g.ID, err)
		}
		if !groupLeft(g.ID) {
			return true, nil
		}
		if time.Now().After(giveUp) {
			return true, fmt.Errorf("process group %d still runs 10s after SIGKILL", g.ID)
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// groupLeft reports whether process group pgid has a process that is not a
// zombie.
func groupLeft(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	for _, p := range procs() {
		if p.pgrp == pgid && !p.zombie {
			return true
		}
	}
	return false
}

// proc is what /proc/PID/stat says of a process.
type proc struct {
	pid, ppid, pgrp int
	zombie          bool
	start           uint64 // clock ticks after boot
}

// procs lists the processes of this PID namespace.
func procs() []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	ps := make([]proc, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	// The command name, in parentheses, may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid, zombie: f[0] == "Z" || f[0] == "X"}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgrp, _ = strconv.Atoi(f[2])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}

// bootID names the kernel's current boot.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}
