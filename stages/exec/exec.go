// Package exec is the "exec" stage: it runs one command with arguments,
// never through a shell, stores its output in the run log, and ends the
// command's whole process tree with its run (see Supervise).
package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/proctree"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "exec", New: func() stages.Stage { return &Stage{} }}

// Stage runs Command. Its environment is not the process's own, which holds
// release's secrets (the serve token, registry and store passwords, tokens):
// it is the variables of Allowed that are set, the RELEASE_* variables that
// describe the node (with RELEASE_COMMIT_<REPO>, the commit the run pinned
// for each repo: see CommitVar), the variables EnvFrom names, with this
// process's values, and Env. What the command prints reaches the run log with every
// secret release knows hidden, including one it was given through EnvFrom.
type Stage struct {
	Command []string          `yaml:"command"` // argv; the first element is looked up in PATH
	Env     map[string]string `yaml:"env"`
	// EnvFrom names variables of this process the command gets, a secret
	// included; each must be set when the stage runs.
	EnvFrom []string `yaml:"env_from"`
	Dir     string   `yaml:"dir"` // relative to the pipeline file
}

// Allowed are the variables of this process every command gets, when set,
// besides the LC_* ones: where programs are, whose they are, the language,
// the time zone and where temporary files go. Nothing else passes unless a
// stage names it in env_from; not SHELL, since commands never run through a
// shell, nor TERM, since their output goes to a log.
var Allowed = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"}

// validName is what env and env_from accept as a variable name: what a
// POSIX shell accepts, so that a command's script can read it.
var validName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CommitVar is the variable that gives a command the commit the run pinned
// for repo: RELEASE_COMMIT_ and the repo's name in upper case, each
// character that is no letter or digit as _ ("web-code" gives
// RELEASE_COMMIT_WEB_CODE). So a command checks out the code a release
// was built from, for instance to refresh a service that mounts it.
func CommitVar(repo string) string {
	b := []byte(strings.ToUpper(repo))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "RELEASE_COMMIT_" + string(b)
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
	for i, k := range s.EnvFrom {
		switch {
		case !validName.MatchString(k):
			return fmt.Errorf("with.env_from[%d]: %q is not a variable name (letters, digits and _, not first a digit)", i, k)
		case slices.Contains(s.EnvFrom[:i], k):
			return fmt.Errorf("with.env_from[%d]: %s is named twice", i, k)
		}
		if _, ok := s.Env[k]; ok {
			return fmt.Errorf("with.env_from[%d]: %s is also set in with.env; keep one", i, k)
		}
	}
	return nil
}

// environ is the command's environment, from this process's (os.Environ):
// see Stage. A variable EnvFrom names that is unset is an error that names
// it, never a value.
func (s *Stage) environ(env *stages.Env, own []string) ([]string, error) {
	vars := map[string]string{}
	for _, kv := range own {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if strings.HasPrefix(k, "LC_") {
			out = append(out, k+"="+vars[k])
		}
	}
	for _, k := range Allowed {
		if v, ok := vars[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	out = append(out,
		"RELEASE_RUN_ID="+env.RunID,
		"RELEASE_VERSION="+env.Version,
		"RELEASE_NODE="+env.Node,
		"RELEASE_ITEM="+env.Item,
		"RELEASE_ENVIRONMENT="+env.Environment,
	)
	for _, repo := range slices.Sorted(maps.Keys(env.Commits)) {
		out = append(out, CommitVar(repo)+"="+env.Commits[repo])
	}
	for _, k := range s.EnvFrom {
		v, ok := vars[k]
		if !ok {
			return nil, fmt.Errorf("with.env_from: %s is not set in the environment of release", k)
		}
		out = append(out, k+"="+v)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		out = append(out, k+"="+s.Env[k])
	}
	return out, nil
}

// Run runs the command and waits for it and for every process it started:
// a supervisor process (see Supervise) ends the command's whole tree when
// the command exits, when ctx is done (SIGTERM, then SIGKILL), when this
// process dies, whatever the signal, and when the lease this process holds
// runs out without a renewal (the error then wraps stages.ErrFenced). The
// tree's process group is checkpointed, so that a later run of the node
// kills what a dead supervisor left before it runs the command again.
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	dir := env.Spec.Dir
	if s.Dir != "" {
		dir = s.Dir
		if !filepath.IsAbs(s.Dir) {
			dir = filepath.Join(env.Spec.Dir, s.Dir)
		}
	}
	cmdEnv, err := s.environ(env, os.Environ())
	if err != nil {
		return nil, stages.Permanent(err)
	}
	var out io.Writer = io.Discard
	if env.Log != nil {
		out = env.Log
	}
	logw := redact.Writer(out, env.Spec.Secrets(os.Getenv)...)
	defer logw.Close()

	if g, ok := priorGroup(env.Prior); ok {
		if err := fence(ctx, env); err != nil {
			return nil, fmt.Errorf("start %s: %w", s.Command[0], err)
		}
		if err := killLeftover(ctx, g, out); err != nil {
			return nil, fmt.Errorf("start %s: %w", s.Command[0], err)
		}
	}
	if err := fence(ctx, env); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Command[0], err)
	}
	err = proctree.Run(ctx, proctree.Command{Argv: s.Command, Env: cmdEnv, Dir: dir}, proctree.Options{
		Output:   logw,
		Deadline: env.LeaseExpiry,
		Started: func(g proctree.Group) error {
			if env.Checkpoint == nil {
				return nil
			}
			if err := env.Checkpoint(ctx, groupOutputs(g)); err != nil {
				return fmt.Errorf("record the process group of %s: %w", s.Command[0], err)
			}
			return nil
		},
	})
	var start *proctree.StartError
	var exit *proctree.ExitError
	switch {
	case err == nil:
		return stages.Outputs{"exitCode": "0"}, nil
	case errors.As(err, &start):
		return nil, stages.Permanent(fmt.Errorf("start %s: %w", s.Command[0], err))
	case errors.Is(err, proctree.ErrDeadline):
		return nil, fmt.Errorf("%s stopped: the lease of this process ran out: %w", s.Command[0], stages.ErrFenced)
	case errors.As(err, &exit) && exit.Signal == 0:
		return nil, fmt.Errorf("%s exited with status %d", s.Command[0], exit.Code)
	case errors.As(err, &exit):
		return nil, fmt.Errorf("%s was %w", s.Command[0], err)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: %w", s.Command[0], ctx.Err())
	}
	return nil, fmt.Errorf("run %s: %w", s.Command[0], err)
}

// Supervise must be called first thing in main by a program that runs exec
// stages, and in TestMain by a test binary that does: each command runs
// under a supervisor that is this program re-executed, and in that process
// Supervise runs the supervisor and exits. Elsewhere it returns at once.
func Supervise() { proctree.Main() }

func fence(ctx context.Context, env *stages.Env) error {
	if env.Fence == nil {
		return nil
	}
	return env.Fence(ctx)
}

// The outputs that record a running command's process group.
const (
	outPGID        = "pgid"
	outHost        = "host"
	outSupervisor  = "supervisor"
	outBootID      = "bootId"
	outLeaderStart = "leaderStart"
)

func groupOutputs(g proctree.Group) stages.Outputs {
	return stages.Outputs{
		outPGID:        strconv.Itoa(g.ID),
		outHost:        g.Host,
		outSupervisor:  strconv.Itoa(g.Supervisor),
		outBootID:      g.Boot,
		outLeaderStart: strconv.FormatUint(g.LeaderStart, 10),
	}
}

// priorGroup is the process group an earlier run of the node recorded.
func priorGroup(prior stages.Outputs) (proctree.Group, bool) {
	id, err := strconv.Atoi(prior[outPGID])
	if err != nil || id <= 1 {
		return proctree.Group{}, false
	}
	g := proctree.Group{ID: id, Host: prior[outHost], Boot: prior[outBootID]}
	g.Supervisor, _ = strconv.Atoi(prior[outSupervisor])
	g.LeaderStart, _ = strconv.ParseUint(prior[outLeaderStart], 10, 64)
	return g, true
}

// killLeftover kills what is left of the process group of an earlier run
// of the node (its supervisor died too, or it would have), and says so in
// the log.
func killLeftover(ctx context.Context, g proctree.Group, log io.Writer) error {
	if host, _ := os.Hostname(); g.Host != host {
		fmt.Fprintf(log, "exec: process group %d of an earlier run of this node ran on host %s; it cannot be checked from %s\n", g.ID, g.Host, host)
		return nil
	}
	killed, err := proctree.Kill(ctx, g)
	if killed {
		fmt.Fprintf(log, "exec: killed process group %d, left running by an earlier run of this node (supervisor %d), before running the command again\n", g.ID, g.Supervisor)
	}
	return err
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
