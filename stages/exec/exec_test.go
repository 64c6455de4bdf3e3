package exec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/exec"
)

// helperEnv, when set, makes the test binary a helper process: it prints
// its argv (less argv[0]) and RELEASE_VERSION as JSON on stdout and exits.
// It is the real process whose argv the tests check.
const helperEnv = "EXEC_TEST_PRINT_ARGV"

type seen struct {
	Args    []string `json:"args"`
	Version string   `json:"version"`
}

func TestMain(m *testing.M) {
	exec.Supervise()
	// Under -race, every process sleeps 1 s at exit by default; the
	// supervisors are this binary, and the tests time their end.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if os.Getenv(stageEnv) != "" {
		os.Exit(runStageHelper())
	}
	if os.Getenv(helperEnv) != "" {
		if err := json.NewEncoder(os.Stdout).Encode(seen{Args: os.Args[1:], Version: os.Getenv("RELEASE_VERSION")}); err != nil {
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// canary returns a path that must not exist when the test ends, and shell
// snippets that would create it if a shell ever ran them.
func canary(t *testing.T) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "canary")
	t.Cleanup(func() {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the canary %s exists (%v): a shell ran an argument", path, err)
		}
	})
	return path, []string{
		"$(touch " + path + ")", "`touch " + path + "`", "; touch " + path, "| touch " + path,
		"&& touch " + path, "x\ntouch " + path, "$(touch${IFS}" + path + ")", "> " + path,
	}
}

// load loads a pipeline file with the real exec stage and returns the
// stage of node "run".
func load(t *testing.T, src string) *exec.Stage {
	t.Helper()
	reg := &stages.Registry{}
	reg.Register(exec.Kind)
	dir := t.TempDir()
	p, err := pipeline.Parse("p.yaml", filepath.Join(dir, "p.yaml"), []byte(src), reg)
	if err != nil {
		t.Fatal(err)
	}
	return p.Stages["run"].Impl.(*exec.Stage)
}

func run(t *testing.T, s *exec.Stage, version string) (string, error) {
	t.Helper()
	var log bytes.Buffer
	_, err := s.Run(context.Background(), &stages.Env{
		RunID: "r1", Version: version, Node: "run", Stage: "run",
		Spec: &stages.Spec{Dir: t.TempDir()}, Log: &log,
	})
	return log.String(), err
}

// Arguments written in the pipeline file reach the process as argv, one
// element each, byte for byte: shell syntax, newlines, quotes, globs, empty
// strings and leading dashes included. So does the release version, as an
// environment variable.
func TestArgvVerbatim(t *testing.T) {
	_, snippets := canary(t)
	args := append(snippets,
		"--", "--force", "-rf", "--upload-pack=x", "-", "",
		" spaced out ", "'single'", `"double"`, `\`, "*", "~", "$HOME", "${PATH}", "a\tb", "a\r\nb", "ünïcödé ✓", "#comment",
	)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	command, err := json.Marshal(append([]string{self}, args...))
	if err != nil {
		t.Fatal(err)
	}
	// JSON strings are YAML double-quoted strings.
	s := load(t, "name: p\nstages:\n  run:\n    uses: exec\n    with:\n      command: "+string(command)+"\n      env: {"+helperEnv+": yes}\n")
	if diff := cmp.Diff(append([]string{self}, args...), s.Command); diff != "" {
		t.Fatalf("loaded command (-want +got):\n%s", diff)
	}
	version := "1.0.0-rc.1; touch x $(id)\n--force"
	log, err := run(t, s, version)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	var got seen
	if err := json.Unmarshal([]byte(log), &got); err != nil {
		t.Fatalf("the process printed %q: %v", log, err)
	}
	if diff := cmp.Diff(seen{Args: args, Version: version}, got); diff != "" {
		t.Errorf("argv and RELEASE_VERSION the process saw (-want +got):\n%s", diff)
	}
}

// A command written as one string is a program name, not a command line: it
// is not split and not given to a shell, so it fails to start.
func TestNoShell(t *testing.T) {
	path, snippets := canary(t)
	for _, cmd := range []string{"sh -c 'touch " + path + "'", "touch " + path, "true; touch " + path, snippets[0]} {
		t.Run(cmd, func(t *testing.T) {
			command, _ := json.Marshal([]string{cmd})
			s := load(t, "name: p\nstages:\n  run:\n    uses: exec\n    with:\n      command: "+string(command)+"\n")
			_, err := run(t, s, "1.0.0")
			var se *stages.Error
			if err == nil || !errors.As(err, &se) || se.Retry || !strings.HasPrefix(err.Error(), "start "+cmd+": ") {
				t.Fatalf("run: %v, want a permanent error starting %q", err, "start "+cmd+": ")
			}
			t.Log(err)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		s    exec.Stage
		want string
	}{
		{"no command", exec.Stage{}, "with.command: required, as a list: [program, arg, …]"},
		{"empty program", exec.Stage{Command: []string{"", "x"}}, "with.command: required, as a list: [program, arg, …]"},
		{"env name with =", exec.Stage{Command: []string{"true"}, Env: map[string]string{"A=B": "x"}}, `with.env: "A=B" is not a variable name`},
		{"env name with NUL", exec.Stage{Command: []string{"true"}, Env: map[string]string{"A\x00": "x"}}, `with.env: "A\x00" is not a variable name`},
		{"env_from value", exec.Stage{Command: []string{"true"}, EnvFrom: []string{"TOKEN=x"}}, `with.env_from[0]: "TOKEN=x" is not a variable name (letters, digits and _, not first a digit)`},
		{"env_from empty", exec.Stage{Command: []string{"true"}, EnvFrom: []string{"A", ""}}, `with.env_from[1]: "" is not a variable name (letters, digits and _, not first a digit)`},
		{"env_from digit first", exec.Stage{Command: []string{"true"}, EnvFrom: []string{"1A"}}, `with.env_from[0]: "1A" is not a variable name (letters, digits and _, not first a digit)`},
		{"env_from expansion", exec.Stage{Command: []string{"true"}, EnvFrom: []string{"$HOME"}}, `with.env_from[0]: "$HOME" is not a variable name (letters, digits and _, not first a digit)`},
		{"env_from twice", exec.Stage{Command: []string{"true"}, EnvFrom: []string{"A", "B", "A"}}, `with.env_from[2]: A is named twice`},
		{"env_from and env", exec.Stage{Command: []string{"true"}, Env: map[string]string{"A": "x"}, EnvFrom: []string{"A"}}, `with.env_from[0]: A is also set in with.env; keep one`},
		{"fine", exec.Stage{Command: []string{"true", "$(id)"}, Env: map[string]string{"A": "$(id)"}, EnvFrom: []string{"GITHUB_TOKEN", "_x1"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if err := tt.s.Validate(nil); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate = %q, want %q", got, tt.want)
			}
		})
	}
}

// A failing command's error says the program and the status, and its
// output goes to the node's log.
func TestExitStatus(t *testing.T) {
	s := &exec.Stage{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}
	log, err := run(t, s, "1.0.0")
	if err == nil || err.Error() != "sh exited with status 3" {
		t.Errorf("run: %v, want sh exited with status 3", err)
	}
	if log != "out\nerr\n" {
		t.Errorf("log = %q", log)
	}
}
