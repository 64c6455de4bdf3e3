// Package exec is the "exec" stage: it runs one command with arguments,
// never through a shell, and stores its output in the run log.
package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/stages"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "exec", New: func() stages.Stage { return &Stage{} }}

// Stage runs Command. Its environment is the process's own plus Env and a
// few RELEASE_* variables that describe the node. The secrets the pipeline
// reads (registry password, tokens) are in that environment, for commands
// that need them; what the command prints reaches the run log with them
// hidden.
type Stage struct {
	Command []string          `yaml:"command"` // argv; the first element is looked up in PATH
	Env     map[string]string `yaml:"env"`
	Dir     string            `yaml:"dir"` // relative to the pipeline file
}

// Validate checks the command before anything runs.
func (s *Stage) Validate(*stages.Spec) error {
	if len(s.Command) == 0 || s.Command[0] == "" {
		return errors.New("with.command: required, as a list: [program, arg, …]")
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("with.env: %q is not a variable name", k)
		}
	}
	return nil
}

// Run runs the command and waits for it. A cancelled context stops the
// command's whole process group; the command also dies with this process.
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	cmd := osexec.Command(s.Command[0], s.Command[1:]...)
	cmd.Dir = env.Spec.Dir
	if s.Dir != "" {
		cmd.Dir = s.Dir
		if !filepath.IsAbs(s.Dir) {
			cmd.Dir = filepath.Join(env.Spec.Dir, s.Dir)
		}
	}
	cmd.Env = append(os.Environ(),
		"RELEASE_RUN_ID="+env.RunID,
		"RELEASE_VERSION="+env.Version,
		"RELEASE_NODE="+env.Node,
		"RELEASE_ITEM="+env.Item,
		"RELEASE_ENVIRONMENT="+env.Environment,
	)
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+s.Env[k])
	}
	var out io.Writer = io.Discard
	if env.Log != nil {
		out = env.Log
	}
	logw := redact.Writer(out, env.Spec.Secrets(os.Getenv)...)
	defer logw.Close()
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, stages.Permanent(fmt.Errorf("start %s: %w", s.Command[0], err))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// Ask the group to stop, then make sure it does.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		return nil, fmt.Errorf("%s: %w", s.Command[0], ctx.Err())
	}
	if err != nil {
		var exit *osexec.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("%s exited with status %d", s.Command[0], exit.ExitCode())
		}
		return nil, fmt.Errorf("run %s: %w", s.Command[0], err)
	}
	return stages.Outputs{"exitCode": "0"}, nil
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
