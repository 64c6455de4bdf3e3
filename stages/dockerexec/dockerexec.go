// Package dockerexec is the "docker-exec" stage: a command run inside every
// running container of a service in an environment, on every host of the
// environment, every replica, one container at a time. A reload of code
// mounted into the containers, or a cache flush, is the model.
//
//  1. List the service's running containers on each host of the
//     environment, by the deploy's labels (job containers of docker-run
//     are not the service's), in the order of the hosts, then by name.
//  2. For each one not done yet by an earlier attempt of the node (its
//     progress lists them), check the fence and run the command, without a
//     shell, its output in the run log, each line prefixed with the host
//     and the container, secrets hidden.
//  3. The first command that fails (exit status, or the engine) stops the
//     stage and fails the node naming the container; a resume goes on with
//     the containers not done.
//
// A service with no running container in the environment fails the node:
// nothing was run.
package dockerexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "docker-exec", New: func() stages.Stage { return &Stage{} }}

// outDone is the progress output listing the containers (host/name, one a
// line) the command already ran in successfully.
const outDone = "done"

// Stage runs Command in every running container of Service.
type Stage struct {
	Service string   `yaml:"service"`
	Command []string `yaml:"command"` // argv, run without a shell
}

// Validate checks the stage's `with:` fields.
func (s *Stage) Validate(spec *stages.Spec) error {
	if s.Service == "" {
		return errors.New("with.service: required: the service whose containers run the command")
	}
	if spec != nil {
		if _, ok := spec.Services[s.Service]; !ok {
			return fmt.Errorf("with.service: unknown service %q (known: %s)", s.Service, strings.Join(spec.ServiceNames(), ", "))
		}
	}
	if len(s.Command) == 0 || s.Command[0] == "" {
		return errors.New("with.command: required, as a list: [program, arg, …]")
	}
	return nil
}

// box is one running container of the service.
type box struct {
	h *dockerhost.Host
	c dockerhost.Container
}

func (b box) String() string { return b.h.Addr() + "/" + b.c.Name }

// Run runs the command in each running container, one at a time.
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	if env.Spec == nil {
		return nil, stages.Permanent(errors.New("docker-exec: no pipeline spec"))
	}
	if err := s.Validate(env.Spec); err != nil {
		return nil, stages.Permanent(err)
	}
	e, ok := env.Spec.Environments[env.Environment]
	if !ok {
		return nil, stages.Permanent(fmt.Errorf("docker-exec: unknown environment %q: the stage needs one (environment: ENV)", env.Environment))
	}
	what := fmt.Sprintf("%s in %s %s", argv(s.Command), s.Service, env.Environment)
	secrets := secretsOf(env.Spec, env.Environment, s.Service)
	var out io.Writer = io.Discard
	if env.Log != nil {
		out = env.Log
	}
	logw := redact.Writer(out, secrets...)
	defer logw.Close()
	fail := func(err error) error { return redact.Error(err, secrets...) }

	var hosts []*dockerhost.Host
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	var boxes []box
	labels := map[string]string{
		target.LabelPipeline:    deploy.PipelineName(env.Spec),
		target.LabelEnvironment: env.Environment,
		target.LabelService:     s.Service,
	}
	for _, addr := range e.Hosts {
		h, err := dockerhost.Open(addr, engine.Bounds(env.Spec.Timeouts))
		if err != nil {
			return nil, stages.Permanent(fail(err))
		}
		hosts = append(hosts, h)
		list, err := h.List(ctx, labels)
		if err != nil {
			return nil, fail(err)
		}
		slices.SortFunc(list, func(a, b dockerhost.Container) int { return strings.Compare(a.Name, b.Name) })
		for _, c := range list {
			if c.Running && !target.IsJob(c.Labels) {
				boxes = append(boxes, box{h, c})
			}
		}
	}
	if len(boxes) == 0 {
		return nil, stages.Permanent(fmt.Errorf("docker-exec %s: no running container of %s in %s", what, s.Service, env.Environment))
	}

	done := doneIn(env.Prior)
	for _, b := range boxes {
		if slices.Contains(done, b.String()) {
			fmt.Fprintf(logw, "docker-exec %s: %s: done by an earlier attempt\n", env.Environment, b)
			continue
		}
		if env.Fence != nil {
			if err := env.Fence(ctx); err != nil {
				return progress(done), fmt.Errorf("docker-exec %s in %s: %w", what, b, err)
			}
		}
		fmt.Fprintf(logw, "docker-exec %s: %s: %s\n", env.Environment, b, argv(s.Command))
		pw := &prefixWriter{w: logw, prefix: b.String() + ": "}
		code, err := b.h.ExecTo(ctx, b.c.ID, s.Command, pw)
		pw.Flush()
		if err != nil {
			return progress(done), fail(fmt.Errorf("docker-exec %s: container %s: %w", what, b, err))
		}
		if code != 0 {
			return progress(done), fail(fmt.Errorf("docker-exec %s: container %s: exited with status %d", what, b, code))
		}
		done = append(done, b.String())
		if env.Checkpoint != nil {
			if err := env.Checkpoint(ctx, progress(done)); err != nil {
				return progress(done), fmt.Errorf("docker-exec %s: record progress: %w", what, err)
			}
		}
	}
	fmt.Fprintf(logw, "docker-exec %s: ran %s in %d containers\n", env.Environment, argv(s.Command), len(boxes))
	o := progress(done)
	o["containers"] = fmt.Sprint(len(boxes))
	return o, nil
}

// secretsOf are the values release knows that the log must hide: the
// pipeline's own and the service's env_from variables that are set here.
func secretsOf(spec *stages.Spec, environment, service string) []string {
	secrets := spec.Secrets(os.Getenv)
	for _, n := range spec.ServiceIn(environment, service).EnvFrom {
		if v := os.Getenv(n); v != "" {
			secrets = append(secrets, v)
		}
	}
	return secrets
}

func doneIn(prior stages.Outputs) []string {
	if prior[outDone] == "" {
		return nil
	}
	return strings.Split(prior[outDone], "\n")
}

func progress(done []string) stages.Outputs {
	return stages.Outputs{outDone: strings.Join(done, "\n")}
}

// argv shows a command in the log and in errors.
func argv(cmd []string) string { return "[" + strings.Join(cmd, " ") + "]" }

// prefixWriter writes each line with a prefix; Flush writes a last line
// without a newline.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := io.WriteString(p.w, p.prefix+string(p.buf[:i+1])); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
}

// Flush writes what is left, ending it with a newline.
func (p *prefixWriter) Flush() {
	if len(p.buf) > 0 {
		io.WriteString(p.w, p.prefix+string(p.buf)+"\n")
		p.buf = nil
	}
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
