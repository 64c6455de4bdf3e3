// Package dockerrun is the "docker-run" stage: a job, that is a one-off
// container from a service's release image (by digest) running a command,
// on the environment's network, with the environment the deploy gives that
// service's containers (env, env_file, env_from secrets, RELEASE_VERSION,
// RELEASE_ENVIRONMENT) and its volumes and limits, on the first host that
// runs the service in the environment. A migration before a deploy is
// the model: it reaches the other services by name, http://SERVICE:PORT.
//
// A job is run once per node of a run, also across a kill of release:
//
//  1. Look for the job containers of this node on the host, by the labels
//     release.run and release.node. One that runs is awaited, never run
//     again; one that has exited gives its exit status; one that was
//     created and never started is started.
//  2. With none, a job that the node's progress says exited 0 is not run
//     again. A job that failed is, by a resume or a retry of the node.
//  3. Otherwise pull the image, make sure the environment network is
//     there, create the container, check the fence, start it.
//  4. Stream its output into the run log (secrets hidden) until it exits,
//     record the exit status in the node's progress, then remove the
//     container. A status other than 0 fails the node.
//
// When the stage's context ends while the job runs (SIGINT, a lost
// lease), the container is left running for a resume to await; when the
// stage's timeout ends it, the container is stopped and removed.
package dockerrun

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
	"github.com/sweepboard/release/stages/internal/engine"
	"github.com/sweepboard/release/stages/internal/registry"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "docker-run", New: func() stages.Stage { return &Stage{} }}

// LabelNode is the label of a job container that names its node; with
// release.run (target.LabelRunID) it finds a node's job again.
const LabelNode = target.LabelNode

// StopTimeout is how long a job that outlives the stage's timeout gets
// between SIGTERM and SIGKILL.
const StopTimeout = 10 * time.Second

// The outputs of a node, recorded as its progress once the job exited.
const (
	outService   = "service"
	outHost      = "host"
	outContainer = "container"
	outExitCode  = "exitCode"
)

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
func (s *Stage) Validate(spec *stages.Spec) error { return validate(spec, s.Service, s.Command) }

func validate(spec *stages.Spec, service string, command []string) error {
	if service == "" {
		return errors.New("with.service: required: the service whose image and configuration the job gets")
	}
	if spec != nil {
		if _, ok := spec.Services[service]; !ok {
			return fmt.Errorf("with.service: unknown service %q (known: %s)", service, strings.Join(spec.ServiceNames(), ", "))
		}
	}
	if len(command) == 0 || command[0] == "" {
		return errors.New("with.command: required, as a list: [program, arg, …]")
	}
	return nil
}

// job is one node's job as it should run.
type job struct {
	what    string // "job of api [/api migrate]", for the log and errors
	host    string
	labels  map[string]string
	spec    dockerhost.Job
	secrets []string
}

// plan decides the job of env's node: where it runs and as what.
func (s *Stage) plan(env *stages.Env) (*job, error) {
	spec := env.Spec
	if spec == nil {
		return nil, errors.New("docker-run: no pipeline spec")
	}
	if err := validate(spec, s.Service, s.Command); err != nil {
		return nil, err
	}
	if env.Environment == "" {
		return nil, errors.New("docker-run: the stage has no environment: a job runs in one (environment: ENV)")
	}
	if _, ok := spec.Environments[env.Environment]; !ok {
		return nil, fmt.Errorf("docker-run: unknown environment %q", env.Environment)
	}
	j := &job{what: fmt.Sprintf("job of %s %s", s.Service, argv(s.Command))}
	cfg := spec.ServiceIn(env.Environment, s.Service)
	if len(cfg.Hosts) == 0 {
		return nil, fmt.Errorf("docker-run %s in %s: no hosts", j.what, env.Environment)
	}
	j.host = cfg.Hosts[0]
	ref := env.Images[s.Service]
	switch {
	case ref == "":
		return nil, fmt.Errorf("docker-run %s in %s: no image of %s in the release", j.what, env.Environment, s.Service)
	case !strings.Contains(ref, "@sha256:"):
		return nil, fmt.Errorf("docker-run %s in %s: image %s is not a digest reference", j.what, env.Environment, ref)
	}
	vars, secrets, err := deploy.ContainerEnv(spec, env.Environment, s.Service, env.Version, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("docker-run %s in %s: %w", j.what, env.Environment, err)
	}
	j.secrets = append(secrets, spec.Secrets(os.Getenv)...)
	pipeline := deploy.PipelineName(spec)
	j.labels = map[string]string{
		target.LabelPipeline:    pipeline,
		target.LabelEnvironment: env.Environment,
		target.LabelService:     s.Service,
		target.LabelRunID:       env.RunID,
		LabelNode:               env.Node,
	}
	labels := map[string]string{target.LabelVersion: env.Version, target.LabelDigest: ref}
	for k, v := range j.labels {
		labels[k] = v
	}
	j.spec = dockerhost.Job{
		Name:    containerName(pipeline, env, s.Service),
		Image:   ref,
		Argv:    slices.Clone(s.Command),
		Env:     vars,
		Labels:  labels,
		Volumes: slices.Clone(cfg.Service.Volumes),
		Memory:  cfg.Memory,
		CPUs:    cfg.CPUs,
		Network: spec.NetworkName(env.Environment),
	}
	return j, nil
}

// containerName is unique per run, node and attempt:
// PIPELINE-ENV-SERVICE-job-HASH-ATTEMPT, HASH of the run and the node.
func containerName(pipeline string, env *stages.Env, service string) string {
	sum := sha256.Sum256([]byte(env.RunID + "\x00" + env.Node))
	return target.Sanitize(pipeline) + "-" + target.Sanitize(env.Environment) + "-" + target.Sanitize(service) +
		"-job-" + hex.EncodeToString(sum[:4]) + "-" + strconv.Itoa(max(env.Attempt, 1))
}

// argv shows a command in the log and in errors.
func argv(cmd []string) string { return "[" + strings.Join(cmd, " ") + "]" }

// runner is the state of one Run.
type runner struct {
	env *stages.Env
	job *job
	h   *dockerhost.Host
	reg *registry.Client
	log io.Writer // the run log, secrets hidden
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "docker-run %s: "+format+"\n", append([]any{r.env.Environment}, args...)...)
}

// fail is err with every secret the job knows hidden.
func (r *runner) fail(err error) error {
	if err == nil {
		return nil
	}
	return redact.Error(err, append(slices.Clone(r.job.secrets), r.reg.Secrets()...)...)
}

// Run runs the node's job once (see the package comment).
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	j, err := s.plan(env)
	if err != nil {
		return nil, stages.Permanent(err)
	}
	var out io.Writer = io.Discard
	if env.Log != nil {
		out = env.Log
	}
	logw := redact.Writer(out, j.secrets...)
	defer logw.Close()
	r := &runner{env: env, job: j, reg: registry.New(env.Spec, os.Getenv), log: logw}
	h, err := dockerhost.Open(j.host, engine.Bounds(env.Spec.Timeouts))
	if err != nil {
		return nil, stages.Permanent(err)
	}
	defer h.Close()
	r.h = h
	o, err := r.run(ctx)
	return o, r.fail(err)
}

func (r *runner) run(ctx context.Context) (stages.Outputs, error) {
	c, state, err := r.leftover(ctx)
	if err != nil {
		return nil, err
	}
	prior := r.env.Prior
	switch state {
	case "running":
		r.logf("the %s, container %s on %s, started before this process: awaiting it; its output so far follows", r.job.what, c.Name, r.h.Addr())
		return r.await(ctx, c)
	case "exited":
		r.logf("the %s, container %s on %s, exited before this process saw it: taking its exit status; its output follows", r.job.what, c.Name, r.h.Addr())
		return r.await(ctx, c)
	case "created":
		r.logf("the %s, container %s on %s, was created and never started: starting it", r.job.what, c.Name, r.h.Addr())
		return r.start(ctx, c)
	}
	if prior[outContainer] != "" && prior[outExitCode] == "0" {
		r.logf("the %s already ran for this node (container %s on %s exited 0): not run again", r.job.what, prior[outContainer], prior[outHost])
		return r.outputs(prior[outContainer], 0), nil
	}
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	c, err = r.h.CreateJob(ctx, r.job.spec)
	if err != nil {
		return nil, err
	}
	return r.start(ctx, c)
}

// leftover finds what an earlier owner of this node left on the host: the
// job container to go on with and its state ("running", "exited",
// "created"), or state "" for none. Any other job container of the node
// is removed, and so is one whose failure the node recorded already: a
// resume runs that job again.
func (r *runner) leftover(ctx context.Context) (dockerhost.Container, string, error) {
	list, err := r.h.List(ctx, r.job.labels)
	if err != nil {
		return dockerhost.Container{}, "", err
	}
	type found struct {
		c     dockerhost.Container
		state string
	}
	var pick *found
	rank := map[string]int{"running": 3, "exited": 2, "created": 1}
	var extra []dockerhost.Container
	for _, c := range list { // newest first
		st, err := r.h.State(ctx, c.ID, 0)
		if err != nil {
			return dockerhost.Container{}, "", err
		}
		state := "exited"
		switch st.Status {
		case "created":
			state = "created"
		case "running", "restarting", "paused":
			state = "running"
		}
		prior := r.env.Prior
		if state == "exited" && c.Name == prior[outContainer] && prior[outExitCode] != "" && prior[outExitCode] != "0" {
			r.logf("removing container %s of the %s, whose exit status %s the node recorded", c.Name, r.job.what, prior[outExitCode])
			extra = append(extra, c)
			continue
		}
		if pick == nil || rank[state] > rank[pick.state] {
			if pick != nil {
				extra = append(extra, pick.c)
			}
			pick = &found{c, state}
			continue
		}
		extra = append(extra, c)
	}
	for _, c := range extra {
		if err := r.h.Remove(ctx, c.ID); err != nil {
			return dockerhost.Container{}, "", err
		}
	}
	if pick == nil {
		return dockerhost.Container{}, "", nil
	}
	return pick.c, pick.state, nil
}

// prepare pulls the image, with the registry chain's credentials, and
// makes sure the environment network is on the host.
func (r *runner) prepare(ctx context.Context) error {
	ref := r.job.spec.Image
	reg := registryOf(ref)
	p := engine.Policy().Reporting(func(w retry.Wait) {
		r.logf("pull %s: attempt %d of %d failed: %v; trying again in %s", ref, w.Attempt, w.Of, r.fail(w.Err), w.Wait.Round(time.Millisecond))
	})
	err := p.Do(ctx, "pull "+ref, func(ctx context.Context) error {
		auth, err := r.reg.EngineAuth(ctx, ref)
		if err != nil {
			return stages.Permanent(err)
		}
		return r.reg.Error(reg, r.h.Pull(ctx, ref, auth))
	})
	if err != nil {
		return err
	}
	driver := dockerhost.Bridge
	if r.env.Spec.TargetName(r.env.Environment) == "swarm" {
		driver = dockerhost.Overlay
	}
	labels := map[string]string{
		target.LabelPipeline:    r.job.labels[target.LabelPipeline],
		target.LabelEnvironment: r.env.Environment,
	}
	_, err = r.h.EnsureNetwork(ctx, r.job.spec.Network, driver, labels)
	return err
}

// registryOf is the registry part of an image reference.
func registryOf(ref string) string {
	n, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return ""
	}
	return n.Context().RegistryStr()
}

// start checks the fence and starts a created job container, then awaits
// it.
func (r *runner) start(ctx context.Context, c dockerhost.Container) (stages.Outputs, error) {
	if r.env.Fence != nil {
		if err := r.env.Fence(ctx); err != nil {
			// Never started: a later owner starts it.
			return nil, fmt.Errorf("start the %s: %w", r.job.what, err)
		}
	}
	if err := r.h.Start(ctx, c); err != nil {
		return nil, err
	}
	r.logf("started the %s as container %s on %s", r.job.what, c.Name, r.h.Addr())
	return r.await(ctx, c)
}

// await streams a started job's output into the log until it exits, then
// records its exit status and removes it.
func (r *runner) await(ctx context.Context, c dockerhost.Container) (stages.Outputs, error) {
	err := r.h.Follow(ctx, c.ID, r.log)
	code := 0
	if err == nil {
		code, err = r.h.Wait(ctx, c.ID)
	}
	if ctx.Err() != nil {
		return nil, r.interrupted(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	out := r.outputs(c.Name, code)
	if r.env.Checkpoint != nil {
		// Recorded before the container goes: whatever happens next, a
		// later owner learns the status from one or the other.
		if err := r.env.Checkpoint(ctx, out); err != nil {
			return nil, fmt.Errorf("record the exit status of the %s: %w", r.job.what, err)
		}
	}
	if err := r.h.Remove(context.WithoutCancel(ctx), c.ID); err != nil {
		r.logf("warning: %v", r.fail(err))
	}
	if code != 0 {
		return out, fmt.Errorf("docker-run %s in %s: exited with status %d (container %s on %s)", r.job.what, r.env.Environment, code, c.Name, r.h.Addr())
	}
	r.logf("the %s exited 0", r.job.what)
	return out, nil
}

// interrupted is the error of a job the stage stopped waiting for. A
// timeout of the stage stops and removes it; anything else (SIGINT, a
// lost lease) leaves it running, for a resume to await.
func (r *runner) interrupted(ctx context.Context, c dockerhost.Container) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		bg := context.WithoutCancel(ctx)
		bg, cancel := context.WithTimeout(bg, StopTimeout+10*time.Second)
		defer cancel()
		stopErr := r.h.Stop(bg, c, StopTimeout)
		if stopErr == nil {
			stopErr = r.h.Remove(bg, c.ID)
		}
		if stopErr != nil {
			return fmt.Errorf("docker-run %s in %s: %w; stopping container %s: %v", r.job.what, r.env.Environment, ctx.Err(), c.Name, stopErr)
		}
		r.logf("stopped and removed container %s of the %s: the stage timed out", c.Name, r.job.what)
		return fmt.Errorf("docker-run %s in %s: %w: container %s stopped", r.job.what, r.env.Environment, ctx.Err(), c.Name)
	}
	r.logf("stopped waiting for the %s: container %s on %s runs on, for a resume to await", r.job.what, c.Name, r.h.Addr())
	return fmt.Errorf("docker-run %s in %s: %w: container %s on %s left running for a resume to await", r.job.what, r.env.Environment, ctx.Err(), c.Name, r.h.Addr())
}

func (r *runner) outputs(container string, code int) stages.Outputs {
	return stages.Outputs{
		outService:   r.job.labels[target.LabelService],
		outHost:      r.h.Addr(),
		outContainer: container,
		outExitCode:  strconv.Itoa(code),
	}
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
