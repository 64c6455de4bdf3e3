package deploy

import (
	"context"
	"fmt"
	"strings"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/job"
)

// Job is a hook or a verify job of the stage's `with:`: a one-off
// container of Service's new release image running Command, on the
// environment network with the service's configuration (env, env_file,
// env_from, RELEASE_VERSION, volumes, limits), on the first host that
// runs the service in the environment, as docker-run runs one.
//
// The jobs of a node run once each, also across a kill of release: each
// has its name (before[0], after[1], verify[0]) in its containers' label
// release.node (NODE/before[0]) and in the node's progress, so that a
// resume awaits a job that still runs and does not run again one that
// exited 0 (stages/internal/job).
type Job struct {
	Service string   `yaml:"service"`
	Command []string `yaml:"command"`
}

// validate checks a job; at names its place ("with.before[0].").
func (j Job) validate(spec *stages.Spec, at string) error {
	if j.Service == "" {
		return fmt.Errorf("%sservice: required: the service whose new image and configuration the job gets", at)
	}
	if spec != nil {
		if _, ok := spec.Services[j.Service]; !ok {
			return fmt.Errorf("%sservice: unknown service %q (known: %s)", at, j.Service, strings.Join(spec.ServiceNames(), ", "))
		}
	}
	if len(j.Command) == 0 || j.Command[0] == "" {
		return fmt.Errorf("%scommand: required, as a list: [program, arg, …]", at)
	}
	return nil
}

// hooks runs the jobs of one hook ("before", "after") in order; the first
// that fails stops them and fails the stage, naming it.
func (d *deployer) hooks(ctx context.Context, hook string, jobs []Job) error {
	for i, j := range jobs {
		if err := d.job(ctx, fmt.Sprintf("%s[%d]", hook, i), j); err != nil {
			return err
		}
	}
	return nil
}

// job runs one job of the node, named name, from the release's images.
func (d *deployer) job(ctx context.Context, name string, j Job) error {
	env := d.env
	vars, secrets, err := containerEnv(env.Spec.ServiceIn(env.Environment, j.Service), env.Environment, env.Version, d.stage.lookupEnv)
	if err != nil {
		return stages.Permanent(fmt.Errorf("deploy %s: %s job of %s %s: %w", env.Environment, name, j.Service, job.Argv(j.Command), err))
	}
	d.addSecrets(secrets)
	// The job sees the release being deployed, whatever the node's
	// Images say of upstream nodes.
	jenv := *env
	jenv.Images = d.images
	jenv.Log = logWriter{d}
	plan, err := job.Plan(&jenv, job.Request{
		Service: j.Service, Command: j.Command, Name: name, Vars: vars, Secrets: secrets,
		Pipeline: d.pipeline, Kind: "deploy",
	})
	if err != nil {
		return stages.Permanent(fmt.Errorf("deploy %s: %w", env.Environment, err))
	}
	_, err = job.Run(ctx, &jenv, plan)
	return err
}

// logWriter writes a job's output into the deploy's log, with the same
// secrets hidden.
type logWriter struct{ d *deployer }

func (w logWriter) Write(p []byte) (int, error) {
	w.d.logMu.Lock()
	defer w.d.logMu.Unlock()
	_, err := w.d.log.Write(p)
	return len(p), err
}
