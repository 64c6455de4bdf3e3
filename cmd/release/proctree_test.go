package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	execstage "github.com/sweepboard/release/stages/exec"
)

// The tests of this package that run exec stages in this process (serve)
// need the supervisor hook too, and TestMain hands the process to
// testscript: the hook runs before it.
func init() { execstage.Supervise() }

// proctreePipeline has one exec stage whose effect comes from a
// grandchild after {{sleep}} seconds; the outer shell, the group's leader,
// first writes its pid to "started".
const proctreePipeline = `
name: proctree
stages:
  nested:
    uses: exec
    with: {command: [sh, -c, 'sh -c "echo $$ > started; sleep {{sleep}}; echo once-{{trial}} >> {{effects}}"']}
`

// writeProctreePipeline writes the pipeline of one trial into dir.
func writeProctreePipeline(t *testing.T, dir string, trial int, sleep, effects string) {
	t.Helper()
	y := strings.NewReplacer("{{trial}}", strconv.Itoa(trial), "{{sleep}}", sleep, "{{effects}}", effects).Replace(proctreePipeline)
	if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestKill9NestedExecThenResume kills the real binary with SIGKILL while the
// grandchild of an exec stage's command sleeps, at a point that moves
// through the sleep from trial to trial, then resumes the run: the killed
// command's tree is gone within a second, and every trial's effect lands
// exactly once, from the resume, in one file shared by the trials (so an
// effect landing late, during a later trial, is caught too).
func TestKill9NestedExecThenResume(t *testing.T) {
	const trials = 20
	bin := buildRelease(t)
	// A killed owner's claim on its run outlives it by the lease TTL:
	// resume --wait waits that long for it.
	t.Setenv("RELEASE_LEASE_TTL", "2s")
	effects := filepath.Join(t.TempDir(), "effects")
	var want []string
	var gone []time.Duration
	for i := range trials {
		dir := t.TempDir()
		writeProctreePipeline(t, dir, i, "1", effects)
		var stdout strings.Builder
		cmd := exec.Command(bin, "run")
		cmd.Dir, cmd.Stdout = dir, &stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pgid := startedGroup(t, cmd, filepath.Join(dir, "started"))
		time.Sleep(time.Duration(i) * 900 * time.Millisecond / trials)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		killed := time.Now()
		for len(groupProcesses(pgid)) > 0 {
			if time.Since(killed) > time.Second {
				t.Fatalf("trial %d: group %d still has processes 1s after kill -9 of release: %v", i, pgid, groupProcesses(pgid))
			}
			time.Sleep(5 * time.Millisecond)
		}
		gone = append(gone, time.Since(killed))

		id := strings.TrimSpace(stdout.String())
		if out, err := runIn(dir, bin, "resume", "--wait", id); err != nil {
			t.Fatalf("trial %d: resume %s: %v\n%s", i, id, err, out)
		}
		want = append(want, "once-"+strconv.Itoa(i))
		if diff := cmp.Diff(want, readLines(t, effects)); diff != "" {
			t.Fatalf("trial %d: effects (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(map[string]string{"run": "succeeded", "nested": "succeeded"}, runStatus(t, bin, dir, id)); diff != "" {
			t.Errorf("trial %d: statuses (-want +got):\n%s", i, diff)
		}
	}
	slices.Sort(gone)
	t.Logf("%d trials, %d effects, each once; the killed command's tree was gone after kill -9 of release in %v (median), %v (max)",
		trials, len(want), gone[len(gone)/2].Round(time.Millisecond), gone[len(gone)-1].Round(time.Millisecond))
}

// When the supervisor dies with release (both killed, release stopped
// first so that it cannot clean up), the rest of the command's group lives
// on; resume kills it, says so in the node's log, and runs the command
// again: the effect lands once.
func TestKill9SupervisorTooThenResume(t *testing.T) {
	bin := buildRelease(t)
	t.Setenv("RELEASE_LEASE_TTL", "2s")
	dir := t.TempDir()
	effects := filepath.Join(dir, "effects")
	writeProctreePipeline(t, dir, 0, "5", effects)
	var stdout strings.Builder
	cmd := exec.Command(bin, "run")
	cmd.Dir, cmd.Stdout = dir, &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := startedGroup(t, cmd, filepath.Join(dir, "started"))
	started := time.Now()
	supervisor := childWith(t, cmd.Process.Pid, "__release-exec-supervisor")
	// The group is checkpointed within milliseconds of the start; the
	// record is not shown by runs show.
	time.Sleep(time.Second)
	for _, kill := range []struct {
		pid int
		sig syscall.Signal
	}{{cmd.Process.Pid, syscall.SIGSTOP}, {supervisor, syscall.SIGKILL}, {cmd.Process.Pid, syscall.SIGKILL}} {
		if err := syscall.Kill(kill.pid, kill.sig); err != nil {
			t.Fatal(err)
		}
	}
	_ = cmd.Wait()
	id := strings.TrimSpace(stdout.String())
	time.Sleep(100 * time.Millisecond)
	left := groupProcesses(pgid)
	if len(left) == 0 {
		t.Fatalf("no process of group %d is left after the kill: nothing for resume to do", pgid)
	}
	t.Logf("left in group %d: %v", pgid, left)

	if out, err := runIn(dir, bin, "resume", "--wait", id); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if diff := cmp.Diff([]string{"once-0"}, readLines(t, effects)); diff != "" {
		t.Errorf("effects (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"run": "succeeded", "nested": "succeeded"}, runStatus(t, bin, dir, id)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	out, err := runIn(dir, bin, "logs", id, "nested")
	if err != nil {
		t.Fatalf("logs: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("exec: killed process group %d, left running by an earlier run of this node (supervisor %d), before running the command again", pgid, supervisor); !strings.Contains(out, want) {
		t.Errorf("the node's log does not say %q:\n%s", want, out)
	}
	// The leftover's effect would have landed 5 s after the start.
	time.Sleep(time.Until(started.Add(6 * time.Second)))
	if diff := cmp.Diff([]string{"once-0"}, readLines(t, effects)); diff != "" {
		t.Errorf("effects after the leftover's sleep (-want +got):\n%s", diff)
	}
}

// childWith returns the pid of the child of parent whose command line
// contains arg.
func childWith(t *testing.T, parent int, arg string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if len(f) > 1 && f[1] == strconv.Itoa(parent) && strings.Contains(string(cmdline), arg) {
			return pid
		}
	}
	t.Fatalf("process %d has no child with %q in its command line", parent, arg)
	return 0
}

// startedGroup waits for the stage's command to write its pid (the pgid of
// its tree) to path.
func startedGroup(t *testing.T, cmd *exec.Cmd, path string) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return pgid
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatal("the exec stage never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// groupProcesses lists the processes of group pgid, zombies included, as
// "pid comm state".
func groupProcesses(pgid int) []string {
	entries, _ := os.ReadDir("/proc")
	var ps []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			ps = append(ps, fmt.Sprintf("%s %s %s", e.Name(), s[strings.IndexByte(s, '(')+1:i], f[0]))
		}
	}
	return ps
}
