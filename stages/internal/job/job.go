// Package job runs a job: a one-off container from a service's release
// image (by digest) with a command, on the environment's network, with
// the environment the deploy gives that service's containers, on the
// first host that runs the service in the environment. The docker-run
// stage runs one per node; the deploy stage runs its before: and after:
// hooks and its verify: jobs with it, several per node, each under its own
// name.
//
// A job is run once per name within a node of a run, also across a kill
// of release:
//
//  1. Look for the job containers of this name on the host, by the labels
//     release.run and release.node. One that runs is awaited, never run
//     again; one that has exited gives its exit status; one that was
//     created and never started is started.
//  2. With none, a job that the node's progress says exited 0 is not run
//     again. A job that failed is, by a resume or a retry of the node.
//  3. Otherwise pull the image, make sure the environment network is
//     there, create the container, check the fence, start it.
//  4. Stream its output into the run log (secrets hidden) until it exits,
//     record the exit status in the node's progress, then remove the
//     container. A status other than 0 is an error.
//
// When the context ends while the job runs (SIGINT, a lost lease), the
// container is left running for a resume to await; when a deadline ends
// it, the container is stopped and removed.
package job

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
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
	"github.com/sweepboard/release/stages/internal/engine"
	"github.com/sweepboard/release/stages/internal/registry"
)

// StopTimeout is how long a job that outlives its deadline gets between
// SIGTERM and SIGKILL.
const StopTimeout = 10 * time.Second

// The progress keys of a job, after its Key prefix.
const (
	OutService   = "service"
	OutHost      = "host"
	OutContainer = "container"
	OutExitCode  = "exitCode"
)

// Request is a job to plan: a command of a service in the node's
// environment.
type Request struct {
	Service string
	Command []string
	// Name tells the jobs of one node apart ("before[0]"); "" for the one
	// job of a docker-run node. It goes into the release.node label and
	// the container name.
	Name string
	// Vars and Secrets are the service's container environment and the
	// values in it to hide (deploy.ContainerEnv).
	Vars, Secrets []string
	// Pipeline is what labels call the pipeline (deploy.PipelineName).
	Pipeline string
	// Kind starts the lines the job writes into the run log: "docker-run".
	Kind string
}

// Job is one job as it should run.
type Job struct {
	What    string // "job of api [/api migrate]", for the log and errors
	Host    string
	Labels  map[string]string // find the job's containers again
	Spec    dockerhost.Job
	Secrets []string
	// Key prefixes the job's progress keys in the node's outputs.
	Key  string
	kind string
}

// Plan decides a job of env's node: where it runs and as what.
func Plan(env *stages.Env, r Request) (*Job, error) {
	spec := env.Spec
	if spec == nil {
		return nil, errors.New("no pipeline spec")
	}
	if env.Environment == "" {
		return nil, errors.New("the stage has no environment: a job runs in one (environment: ENV)")
	}
	if _, ok := spec.Environments[env.Environment]; !ok {
		return nil, fmt.Errorf("unknown environment %q", env.Environment)
	}
	j := &Job{What: fmt.Sprintf("job of %s %s", r.Service, Argv(r.Command)), kind: cmpOr(r.Kind, "job")}
	if r.Name != "" {
		j.What = r.Name + " " + j.What
		j.Key = r.Name + "."
	}
	cfg := spec.ServiceIn(env.Environment, r.Service)
	if len(cfg.Hosts) == 0 {
		return nil, fmt.Errorf("%s in %s: no hosts", j.What, env.Environment)
	}
	j.Host = cfg.Hosts[0]
	ref := env.Images[r.Service]
	switch {
	case ref == "":
		return nil, fmt.Errorf("%s in %s: no image of %s in the release", j.What, env.Environment, r.Service)
	case !strings.Contains(ref, "@sha256:"):
		return nil, fmt.Errorf("%s in %s: image %s is not a digest reference", j.What, env.Environment, ref)
	}
	j.Secrets = append(slices.Clone(r.Secrets), spec.Secrets(os.Getenv)...)
	node := env.Node
	if r.Name != "" {
		node += "/" + r.Name
	}
	j.Labels = map[string]string{
		target.LabelPipeline:    r.Pipeline,
		target.LabelEnvironment: env.Environment,
		target.LabelService:     r.Service,
		target.LabelRunID:       env.RunID,
		target.LabelNode:        node,
	}
	labels := map[string]string{target.LabelVersion: env.Version, target.LabelDigest: ref}
	for k, v := range j.Labels {
		labels[k] = v
	}
	j.Spec = dockerhost.Job{
		Name:    containerName(r.Pipeline, env, node, r.Service),
		Image:   ref,
		Argv:    slices.Clone(r.Command),
		Env:     r.Vars,
		Labels:  labels,
		Volumes: slices.Clone(cfg.Service.Volumes),
		Memory:  cfg.Memory,
		CPUs:    cfg.CPUs,
		Network: spec.NetworkName(env.Environment),
	}
	return j, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// containerName is unique per run, node and attempt:
// PIPELINE-ENV-SERVICE-job-HASH-ATTEMPT, HASH of the run and the node.
func containerName(pipeline string, env *stages.Env, node, service string) string {
	sum := sha256.Sum256([]byte(env.RunID + "\x00" + node))
	return target.Sanitize(pipeline) + "-" + target.Sanitize(env.Environment) + "-" + target.Sanitize(service) +
		"-job-" + hex.EncodeToString(sum[:4]) + "-" + strconv.Itoa(max(env.Attempt, 1))
}

// Argv shows a command in the log and in errors.
func Argv(cmd []string) string { return "[" + strings.Join(cmd, " ") + "]" }

// runner is the state of one Run.
type runner struct {
	env *stages.Env
	job *Job
	h   *dockerhost.Host
	reg *registry.Client
	log io.Writer // the run log, secrets hidden
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s %s: "+format+"\n", append([]any{r.job.kind, r.env.Environment}, args...)...)
}

// fail is err with every secret the job knows hidden.
func (r *runner) fail(err error) error {
	if err == nil {
		return nil
	}
	return redact.Error(err, append(slices.Clone(r.job.Secrets), r.reg.Secrets()...)...)
}

// Run runs the job once (see the package comment) and returns its
// progress, the keys prefixed with j.Key. A job that exits with another
// status than 0 returns its progress and an error naming it.
func Run(ctx context.Context, env *stages.Env, j *Job) (stages.Outputs, error) {
	var out io.Writer = io.Discard
	if env.Log != nil {
		out = env.Log
	}
	logw := redact.Writer(out, j.Secrets...)
	defer logw.Close()
	r := &runner{env: env, job: j, reg: registry.New(env.Spec, os.Getenv), log: logw}
	h, err := dockerhost.Open(j.Host, engine.Bounds(env.Spec.Timeouts))
	if err != nil {
		return nil, stages.Permanent(err)
	}
	defer h.Close()
	r.h = h
	o, err := r.run(ctx)
	return o, r.fail(err)
}

// prior is what the node recorded of this job.
func (r *runner) prior(key string) string { return r.env.Prior[r.job.Key+key] }

func (r *runner) run(ctx context.Context) (stages.Outputs, error) {
	c, state, err := r.leftover(ctx)
	if err != nil {
		return nil, err
	}
	switch state {
	case "running":
		r.logf("the %s, container %s on %s, started before this process: awaiting it; its output so far follows", r.job.What, c.Name, r.h.Addr())
		return r.await(ctx, c)
	case "exited":
		r.logf("the %s, container %s on %s, exited before this process saw it: taking its exit status; its output follows", r.job.What, c.Name, r.h.Addr())
		return r.await(ctx, c)
	case "created":
		r.logf("the %s, container %s on %s, was created and never started: starting it", r.job.What, c.Name, r.h.Addr())
		return r.start(ctx, c)
	}
	if r.prior(OutContainer) != "" && r.prior(OutExitCode) == "0" {
		r.logf("the %s already ran for this node (container %s on %s exited 0): not run again", r.job.What, r.prior(OutContainer), r.prior(OutHost))
		return r.outputs(r.prior(OutContainer), 0), nil
	}
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	c, err = r.h.CreateJob(ctx, r.job.Spec)
	if err != nil {
		return nil, err
	}
	return r.start(ctx, c)
}

// leftover finds what an earlier owner of this job left on the host: the
// job container to go on with and its state ("running", "exited",
// "created"), or state "" for none. Any other job container of the job
// is removed, and so is one whose failure the node recorded already: a
// resume runs that job again.
func (r *runner) leftover(ctx context.Context) (dockerhost.Container, string, error) {
	list, err := r.h.List(ctx, r.job.Labels)
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
		if code := r.prior(OutExitCode); state == "exited" && c.Name == r.prior(OutContainer) && code != "" && code != "0" {
			r.logf("removing container %s of the %s, whose exit status %s the node recorded", c.Name, r.job.What, code)
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
	ref := r.job.Spec.Image
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
		target.LabelPipeline:    r.job.Labels[target.LabelPipeline],
		target.LabelEnvironment: r.env.Environment,
	}
	_, err = r.h.EnsureNetwork(ctx, r.job.Spec.Network, driver, labels)
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
			return nil, fmt.Errorf("start the %s: %w", r.job.What, err)
		}
	}
	if err := r.h.Start(ctx, c); err != nil {
		return nil, err
	}
	r.logf("started the %s as container %s on %s", r.job.What, c.Name, r.h.Addr())
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
			return nil, fmt.Errorf("record the exit status of the %s: %w", r.job.What, err)
		}
	}
	if err := r.h.Remove(context.WithoutCancel(ctx), c.ID); err != nil {
		r.logf("warning: %v", r.fail(err))
	}
	if code != 0 {
		return out, fmt.Errorf("%s %s in %s: exited with status %d (container %s on %s)", r.job.kind, r.job.What, r.env.Environment, code, c.Name, r.h.Addr())
	}
	r.logf("the %s exited 0", r.job.What)
	return out, nil
}

// interrupted is the error of a job the caller stopped waiting for. A
// deadline stops and removes it; anything else (SIGINT, a lost lease)
// leaves it running, for a resume to await.
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
			return fmt.Errorf("%s %s in %s: %w; stopping container %s: %v", r.job.kind, r.job.What, r.env.Environment, ctx.Err(), c.Name, stopErr)
		}
		r.logf("stopped and removed container %s of the %s: it ran out of time", c.Name, r.job.What)
		return fmt.Errorf("%s %s in %s: %w: container %s stopped", r.job.kind, r.job.What, r.env.Environment, ctx.Err(), c.Name)
	}
	r.logf("stopped waiting for the %s: container %s on %s runs on, for a resume to await", r.job.What, c.Name, r.h.Addr())
	return fmt.Errorf("%s %s in %s: %w: container %s on %s left running for a resume to await", r.job.kind, r.job.What, r.env.Environment, ctx.Err(), c.Name, r.h.Addr())
}

func (r *runner) outputs(container string, code int) stages.Outputs {
	k := r.job.Key
	return stages.Outputs{
		k + OutService:   r.job.Labels[target.LabelService],
		k + OutHost:      r.h.Addr(),
		k + OutContainer: container,
		k + OutExitCode:  strconv.Itoa(code),
	}
}
