package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildRelease builds the real binary once per test process.
func buildRelease(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "release-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "release")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// crashPipeline has three stages that each append a line to effects; the
// middle one announces itself, then takes two seconds.
const crashPipeline = `
name: crash
stages:
  one:
    uses: exec
    with: {command: [sh, -c, 'echo one >> effects']}
  two:
    uses: exec
    needs: [one]
    with: {command: [sh, -c, 'touch started; sleep 2; echo two >> effects']}
  three:
    uses: exec
    needs: [two]
    with: {command: [sh, -c, 'echo three >> effects']}
`

func startRun(t *testing.T, bin, dir string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(crashPipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd := exec.Command(bin, "run")
	cmd.Dir, cmd.Stdout = dir, &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			return cmd, &stdout
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("stage two never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runStatus(t *testing.T, bin, dir, id string) map[string]string {
	t.Helper()
	out, err := runIn(dir, bin, "runs", "show", id, "-o", "json")
	if err != nil {
		t.Fatalf("runs show: %v\n%s", err, out)
	}
	var v runView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{"run": v.Status}
	for _, n := range v.Stages {
		got[n.ID] = n.Status
	}
	return got
}

func runIn(dir, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCrashThenResume kills the real binary with SIGKILL while an exec stage
// runs, then resumes: every stage's side effect happens exactly once.
func TestCrashThenResume(t *testing.T) {
	bin := buildRelease(t)
	dir := t.TempDir()
	cmd, stdout := startRun(t, bin, dir)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	id := strings.TrimSpace(stdout.String())

	// The stage's command died with release: nothing more happens to the
	// side effects after the kill.
	time.Sleep(2500 * time.Millisecond)
	if got := readLines(t, filepath.Join(dir, "effects")); !cmp.Equal([]string{"one"}, got) {
		t.Fatalf("effects after the kill = %q, want only one", got)
	}
	if got := runStatus(t, bin, dir, id)["two"]; got != "running" {
		t.Fatalf("two is recorded %s after the kill, want running", got)
	}

	if out, err := runIn(dir, bin, "resume", id); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if diff := cmp.Diff([]string{"one", "two", "three"}, readLines(t, filepath.Join(dir, "effects"))); diff != "" {
		t.Errorf("effects (-want +got):\n%s", diff)
	}
	want := map[string]string{"run": "succeeded", "one": "succeeded", "two": "succeeded", "three": "succeeded"}
	if diff := cmp.Diff(want, runStatus(t, bin, dir, id)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

// TestInterruptExits130 sends SIGINT during a stage: in-flight nodes are
// cancelled through their context, the state is flushed, the exit code is
// 130, and the run resumes to the end.
func TestInterruptExits130(t *testing.T) {
	bin := buildRelease(t)
	dir := t.TempDir()
	cmd, stdout := startRun(t, bin, dir)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitInterrupted {
		t.Fatalf("exit = %v, want status %d", err, exitInterrupted)
	}
	id := strings.TrimSpace(stdout.String())
	want := map[string]string{"run": "interrupted", "one": "succeeded", "two": "interrupted", "three": "interrupted"}
	if diff := cmp.Diff(want, runStatus(t, bin, dir, id)); diff != "" {
		t.Errorf("statuses after SIGINT (-want +got):\n%s", diff)
	}
	if out, err := runIn(dir, bin, "resume", id); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if diff := cmp.Diff([]string{"one", "two", "three"}, readLines(t, filepath.Join(dir, "effects"))); diff != "" {
		t.Errorf("effects (-want +got):\n%s", diff)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}
