// Package dockerrun is the "docker-run" stage: a job, that is a one-off
// container from a service's release image (by digest) running a command,
// on the environment's network, with the environment the deploy gives that
// service's containers (env, env_file, env_from secrets, RELEASE_VERSION,
// RELEASE_ENVIRONMENT) and its volumes and limits, on the first host that
// runs the service in the environment. A migration before a deploy is
// the model: it reaches the other services by name, http://SERVICE:PORT.
//
// A job is run once per node of a run, also across a kill of release: a
// running job container of the node is awaited, one that exited gives
// its status, a job the node's progress says exited 0 is not run again
// (stages/internal/job, which the deploy stage's hooks share). A status
// other than 0 fails the node. When the stage's context ends while the
// job runs (SIGINT, a lost lease), the container is left running for a
// resume to await; when the stage's timeout ends it, the container is
// stopped and removed.
package dockerrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/job"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "docker-run", New: func() stages.Stage { return &Stage{} }}

// LabelNode is the label of a job container that names its node; with
// release.run (target.LabelRunID) it finds a node's job again.
const LabelNode = target.LabelNode

// StopTimeout is how long a job that outlives the stage's timeout gets
// between SIGTERM and SIGKILL.
const StopTimeout = job.StopTimeout

// Stage runs Command as a job of Service in the stage's environment.
type Stage struct {
	// Service names the service whose release image, environment,
	// volumes and limits the job gets.
	Service string `yaml:"service"`
	// Command is the job's argv: it replaces the image's entrypoint and
	// command. No shell.
	Command []string `yaml:"command"`
}

// Validate checks the stage's `with:` fields.
func (s *Stage) Validate(spec *stages.Spec) error {
	return Validate(spec, "with.", s.Service, s.Command)
}

// Validate checks a job's service and command; at prefixes the names of
// the fields in errors ("with.", "with.before[0].").
func Validate(spec *stages.Spec, at, service string, command []string) error {
	if service == "" {
		return fmt.Errorf("%sservice: required: the service whose image and configuration the job gets", at)
	}
	if spec != nil {
		if _, ok := spec.Services[service]; !ok {
			return fmt.Errorf("%sservice: unknown service %q (known: %s)", at, service, strings.Join(spec.ServiceNames(), ", "))
		}
	}
	if len(command) == 0 || command[0] == "" {
		return fmt.Errorf("%scommand: required, as a list: [program, arg, …]", at)
	}
	return nil
}

// plan decides the job of env's node: where it runs and as what.
func (s *Stage) plan(env *stages.Env) (*job.Job, error) {
	if env.Spec == nil {
		return nil, errors.New("docker-run: no pipeline spec")
	}
	if err := Validate(env.Spec, "with.", s.Service, s.Command); err != nil {
		return nil, err
	}
	if env.Environment == "" {
		return nil, errors.New("docker-run: the stage has no environment: a job runs in one (environment: ENV)")
	}
	if _, ok := env.Spec.Environments[env.Environment]; !ok {
		return nil, fmt.Errorf("docker-run: unknown environment %q", env.Environment)
	}
	vars, secrets, err := deploy.ContainerEnv(env.Spec, env.Environment, s.Service, env.Version, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("docker-run job of %s %s in %s: %w", s.Service, job.Argv(s.Command), env.Environment, err)
	}
	j, err := job.Plan(env, job.Request{
		Service: s.Service, Command: s.Command, Vars: vars, Secrets: secrets,
		Pipeline: deploy.PipelineName(env.Spec), Kind: "docker-run",
	})
	if err != nil {
		return nil, fmt.Errorf("docker-run %w", err)
	}
	return j, nil
}

// Run runs the node's job once (see the package comment).
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	j, err := s.plan(env)
	if err != nil {
		return nil, stages.Permanent(err)
	}
	return job.Run(ctx, env, j)
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
