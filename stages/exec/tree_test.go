package exec_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/exec"
)

// nested is a command whose effect comes from a grandchild, two seconds
// after the start: the outer shell runs an inner one, which sleeps.
var nested = []string{"sh", "-c", `sh -c "sleep 2; echo x >> $EFFECT"`}

// stageEnv, when set, makes the test binary a helper process that runs the
// exec stage as the engine would, configured by the JSON of a stageHelper
// in the variable. It prints one JSON helperLine per checkpoint, then one
// with the stage's result.
const stageEnv = "EXEC_TEST_RUN_STAGE"

type stageHelper struct {
	Command []string          `json:"command"`
	Env     map[string]string `json:"env"`
	// Lease is the Unix ns of a lease expiry that is never extended; 0 for
	// none.
	Lease int64 `json:"lease"`
}

type helperLine struct {
	Checkpoint stages.Outputs `json:"checkpoint,omitempty"`
	Done       bool           `json:"done,omitempty"`
	Err        string         `json:"err,omitempty"`
	Fenced     bool           `json:"fenced,omitempty"`
}

func runStageHelper() int {
	var h stageHelper
	if err := json.Unmarshal([]byte(os.Getenv(stageEnv)), &h); err != nil {
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	env := &stages.Env{
		RunID: "r1", Version: "1.0.0", Node: "run", Stage: "run", Attempt: 1,
		Spec: &stages.Spec{Dir: os.TempDir()}, Log: os.Stderr,
		Fence: func(context.Context) error { return nil },
		Checkpoint: func(_ context.Context, out stages.Outputs) error {
			return enc.Encode(helperLine{Checkpoint: out})
		},
	}
	if h.Lease != 0 {
		env.LeaseExpiry = func() time.Time { return time.Unix(0, h.Lease) }
	}
	_, err := (&exec.Stage{Command: h.Command, Env: h.Env}).Run(context.Background(), env)
	line := helperLine{Done: true, Fenced: errors.Is(err, stages.ErrFenced)}
	if err != nil {
		line.Err = err.Error()
	}
	if enc.Encode(line) != nil {
		return 2
	}
	return 0
}

// startHelper starts a helper process running the stage and returns it
// with the lines it prints.
func startHelper(t *testing.T, h stageHelper) (*osexec.Cmd, <-chan helperLine) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	config, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command(self)
	cmd.Env = append(os.Environ(), stageEnv+"="+string(config))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("helper's log:\n%s", stderr.String())
		}
	})
	lines := make(chan helperLine, 8)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l helperLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
	}()
	return cmd, lines
}

// checkpointedGroup waits for the helper's checkpoint and returns the
// process group it names.
func checkpointedGroup(t *testing.T, lines <-chan helperLine) (pgid, supervisor int) {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok || l.Checkpoint == nil {
			t.Fatalf("the helper printed %+v (open %v), want its checkpoint", l, ok)
		}
		pgid, err := strconv.Atoi(l.Checkpoint["pgid"])
		if err != nil {
			t.Fatalf("checkpoint %v: pgid: %v", l.Checkpoint, err)
		}
		host, _ := os.Hostname()
		if l.Checkpoint["host"] != host {
			t.Errorf("checkpoint %v: host is not %s", l.Checkpoint, host)
		}
		supervisor, err := strconv.Atoi(l.Checkpoint["supervisor"])
		if err != nil {
			t.Fatalf("checkpoint %v: supervisor: %v", l.Checkpoint, err)
		}
		return pgid, supervisor
	case <-time.After(10 * time.Second):
		t.Fatal("no checkpoint from the helper in 10s")
	}
	return 0, 0
}

// proc is what /proc/PID/stat says of a process.
type proc struct {
	pid, ppid, pgrp int
	state, comm     string
	start           string
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return proc{}, false
	}
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid, comm: string(b[open+1 : closing]), state: f[0], start: f[19]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgrp, _ = strconv.Atoi(f[2])
	return p, true
}

// members are the processes of group pgid, zombies included.
func members(pgid int) []proc {
	entries, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok && p.pgrp == pgid {
			ps = append(ps, p)
		}
	}
	return ps
}

// waitFor polls cond every 5 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// grandchildSleeps reports whether group pgid has a sleep process: the
// command's grandchild is waiting to make its effect.
func grandchildSleeps(pgid int) bool {
	for _, p := range members(pgid) {
		if p.comm == "sleep" && p.state != "Z" {
			return true
		}
	}
	return false
}

func gone(pgid int) func() bool { return func() bool { return len(members(pgid)) == 0 } }

// noEffect checks, at 3 s after start, that the effect never landed.
func noEffect(t *testing.T, effect string, start time.Time) {
	t.Helper()
	time.Sleep(time.Until(start.Add(3 * time.Second)))
	if b, err := os.ReadFile(effect); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the effect landed after the tree was to be killed: %q, %v", b, err)
	}
}

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool {
	p, ok := readProc(pid)
	return ok && p.state != "Z" && p.state != "X"
}

// kill -9 of the process running the stage ends the command's whole tree,
// grandchild included, before the grandchild makes its effect; the
// supervisor exits once it has.
func TestKill9EndsTree(t *testing.T) {
	effect := filepath.Join(t.TempDir(), "effect")
	start := time.Now()
	helper, lines := startHelper(t, stageHelper{Command: nested, Env: map[string]string{"EFFECT": effect}})
	pgid, supervisor := checkpointedGroup(t, lines)
	waitFor(t, "the grandchild sleeps", 5*time.Second, func() bool { return grandchildSleeps(pgid) })

	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	took := waitFor(t, "no process of the group is left after kill -9", time.Second, gone(pgid))
	t.Logf("group %d: no process left %v after kill -9 of the stage's process", pgid, took.Round(time.Millisecond))
	waitFor(t, "the supervisor exits", time.Second, func() bool { return !running(supervisor) })
	noEffect(t, effect, start)
}

// A process stopped (SIGSTOP) past its lease cannot extend it: the
// supervisor kills the tree when the lease runs out, and the stage, once
// the process goes on, reports that it was fenced out.
func TestStoppedPastLease(t *testing.T) {
	effect := filepath.Join(t.TempDir(), "effect")
	start := time.Now()
	lease := start.Add(time.Second)
	helper, lines := startHelper(t, stageHelper{Command: nested, Env: map[string]string{"EFFECT": effect}, Lease: lease.UnixNano()})
	pgid, _ := checkpointedGroup(t, lines)
	waitFor(t, "the grandchild sleeps", 5*time.Second, func() bool { return grandchildSleeps(pgid) })
	if err := helper.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "no process of the group is left after the lease", 3*time.Second, gone(pgid))
	after := time.Since(lease)
	t.Logf("group %d: no process left %v after the lease ran out", pgid, after.Round(time.Millisecond))
	if after < 0 || after > 500*time.Millisecond {
		t.Errorf("the tree ended %v after the lease ran out, want within [0, 500ms]", after)
	}
	noEffect(t, effect, start)

	if err := helper.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		if !l.Done || !l.Fenced {
			t.Errorf("the stage ended with %+v, want an error that wraps stages.ErrFenced", l)
		}
		t.Logf("stage error: %s", l.Err)
	case <-time.After(5 * time.Second):
		t.Fatal("the stage did not end within 5s of SIGCONT")
	}
}

// The tree ends with the run, in the stage's own process: when the context
// is cancelled, when the lease runs out, and when the command exits with
// processes of its own left behind.
func TestTreeEndsWithRun(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		lease   time.Duration // from the start; 0: no lease
		cancel  bool          // once the grandchild sleeps
		wantErr error         // nil: success
		within  time.Duration // of the start, for the stage to return
	}{
		{name: "cancelled context", command: nested, cancel: true, wantErr: context.Canceled, within: 2 * time.Second},
		{name: "lease runs out", command: nested, lease: time.Second, wantErr: stages.ErrFenced, within: 1500 * time.Millisecond},
		{name: "exit leaves a background job", command: []string{"sh", "-c", `sh -c "sleep 2; echo x >> $EFFECT" & echo started`}, within: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			effect := filepath.Join(t.TempDir(), "effect")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			groups := make(chan int, 1)
			var log bytes.Buffer
			start := time.Now()
			env := &stages.Env{
				RunID: "r1", Version: "1.0.0", Node: "run", Stage: "run",
				Spec: &stages.Spec{Dir: t.TempDir()}, Log: &log,
				Checkpoint: func(_ context.Context, out stages.Outputs) error {
					pgid, err := strconv.Atoi(out["pgid"])
					if err != nil {
						return err
					}
					groups <- pgid
					return nil
				},
			}
			if tt.lease > 0 {
				lease := start.Add(tt.lease)
				env.LeaseExpiry = func() time.Time { return lease }
			}
			done := make(chan error, 1)
			go func() {
				_, err := (&exec.Stage{Command: tt.command, Env: map[string]string{"EFFECT": effect}}).Run(ctx, env)
				done <- err
			}()
			var pgid int
			select {
			case pgid = <-groups:
			case err := <-done:
				t.Fatalf("the stage ended before its checkpoint: %v\n%s", err, log.String())
			}
			if tt.cancel {
				waitFor(t, "the grandchild sleeps", 5*time.Second, func() bool { return grandchildSleeps(pgid) })
				cancel()
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the stage did not return within 10s")
			}
			took := time.Since(start)
			t.Logf("returned after %v: %v", took.Round(time.Millisecond), err)
			if left := members(pgid); len(left) > 0 {
				t.Errorf("group %d has processes left when the stage returned: %+v", pgid, left)
			}
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if took > tt.within {
				t.Errorf("the stage returned %v after the start, want within %v", took, tt.within)
			}
			noEffect(t, effect, start)
		})
	}
}

// A process group recorded by an earlier run of the node (whose supervisor
// died with it) is killed, and waited for, before the command runs again,
// if it is still the recorded group on this host.
func TestPriorGroupKilled(t *testing.T) {
	host, _ := os.Hostname()
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		prior   func(g proc) stages.Outputs
		killed  bool
		wantLog string
	}{
		{
			name:    "alive on this host",
			prior:   func(g proc) stages.Outputs { return priorOf(g, host, string(bootID), g.start) },
			killed:  true,
			wantLog: "exec: killed process group %d, left running by an earlier run of this node (supervisor 1234), before running the command again\n",
		},
		{
			name:    "on another host",
			prior:   func(g proc) stages.Outputs { return priorOf(g, "elsewhere", string(bootID), g.start) },
			wantLog: "exec: process group %d of an earlier run of this node ran on host elsewhere; it cannot be checked from " + host + "\n",
		},
		{
			name:  "before a reboot",
			prior: func(g proc) stages.Outputs { return priorOf(g, host, "another-boot", g.start) },
		},
		{
			name:  "its number names another process now",
			prior: func(g proc) stages.Outputs { return priorOf(g, host, string(bootID), "1") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leftover := osexec.Command("sleep", "30")
			leftover.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := leftover.Start(); err != nil {
				t.Fatal(err)
			}
			ended := make(chan struct{})
			go func() { _ = leftover.Wait(); close(ended) }()
			t.Cleanup(func() { _ = leftover.Process.Kill(); <-ended })
			g, ok := readProc(leftover.Process.Pid)
			if !ok {
				t.Fatal("the leftover is not in /proc")
			}

			// The command says whether the leftover still runs when it
			// starts.
			s := &exec.Stage{Command: []string{"sh", "-c", `s=$(cut -d" " -f3 /proc/$LEFTOVER/stat 2>/dev/null); echo "leftover: ${s:-gone}"`},
				Env: map[string]string{"LEFTOVER": strconv.Itoa(g.pid)}}
			var log bytes.Buffer
			_, err := s.Run(context.Background(), &stages.Env{
				RunID: "r1", Version: "1.0.0", Node: "run", Stage: "run", Attempt: 2,
				Spec: &stages.Spec{Dir: t.TempDir()}, Log: &log, Prior: tt.prior(g),
			})
			if err != nil {
				t.Fatalf("run: %v\n%s", err, log.String())
			}
			want := "leftover: S\n"
			if tt.killed {
				want = "leftover: gone\n"
				if strings.HasSuffix(log.String(), "leftover: Z\n") {
					want = "leftover: Z\n" // killed, not reaped yet by this test
				}
			}
			if tt.wantLog != "" {
				want = strings.Replace(tt.wantLog, "%d", strconv.Itoa(g.pid), 1) + want
			}
			if log.String() != want {
				t.Errorf("log = %q, want %q", log.String(), want)
			}
			select {
			case <-ended:
				if !tt.killed {
					t.Error("the leftover was killed")
				}
			case <-time.After(100 * time.Millisecond):
				if tt.killed {
					t.Error("the leftover still runs")
				}
			}
		})
	}
}

func priorOf(g proc, host, bootID, start string) stages.Outputs {
	return stages.Outputs{
		"pgid": strconv.Itoa(g.pgrp), "host": host, "supervisor": "1234",
		"bootId": strings.TrimSpace(bootID), "leaderStart": start,
	}
}
