// Package deploy is the "deploy" stage: it runs a release's images, by
// digest, in an environment, through the environment's deploy target, and
// reads back what runs there for `release status`.
//
// The stage decides what each service should be in the environment (image,
// configuration, labels, the hash that tells an adopted container from one
// to replace: config.go) and in which order services go; the target, chosen
// by name from Targets (targets.go), makes it so:
//
//   - docker (stages/deploy/docker): containers on each plain Docker host.
//   - swarm (stages/deploy/swarm): Swarm services through a manager.
//
// Services are deployed in depends_on order, ordered by the DAG package,
// independent ones in parallel; a service whose dependencies are not up
// yet is prepared meanwhile when the target can (pull, create). Every step
// is safe to redo, so a deploy killed anywhere converges on the next run.
// For the same reason a service whose engine cannot be reached (refused or
// cut connections, as while it restarts) is deployed again from its
// inventory, a bounded number of times with growing waits, before the
// deploy fails. Once every service runs, the images are tagged in the
// registry with the environment and the version.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"

	"github.com/sweepboard/release/pipeline/dag"
	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/caddy"
	"github.com/sweepboard/release/stages/internal/engine"
	"github.com/sweepboard/release/stages/internal/registry"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "deploy", New: func() stages.Stage { return &Stage{} }, Targets: Targets.Names()}

// Defaults of the stage's `with:` fields.
const (
	DefaultDrain       = 2 * time.Second
	DefaultStopTimeout = 10 * time.Second
)

// Stage deploys the release's images to the stage's environment.
type Stage struct {
	// Drain is how long old containers keep running after the proxy
	// switched away from them, for requests already proxied to them to
	// finish. Caddy cannot tell when they have: it forgets an upstream's
	// request count as soon as a config change drops the upstream. Longer
	// requests rely on the service finishing them on SIGTERM, within
	// StopTimeout.
	Drain time.Duration `yaml:"drain"`
	// StopTimeout is how long an old container's process gets between
	// SIGTERM and SIGKILL.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// Before are jobs run from the new images before any new container
	// takes traffic (a migration); After, jobs run once every service is
	// switched and verified (hooks.go).
	Before []Job `yaml:"before"`
	After  []Job `yaml:"after"`
	// Verify checks the environment after the switch, for a bake time,
	// and puts it back on what ran before when a check fails (verify.go).
	Verify *Verify `yaml:"verify"`

	// retry, when set (by a test), replaces the retry policy of engine
	// calls.
	retry *retry.Policy
	// hook, when set (by a test), is called at the points where a killed
	// deploy leaves the most to clean up (see target.Config.Hook).
	hook func(point, service string)
	// targets, when set (by a test), replaces Targets.
	targets target.Registry
	// getenv, when set (by a test), replaces os.LookupEnv for env_from.
	getenv func(string) (string, bool)
}

// lookupEnv reads a variable of this process for env_from.
func (s *Stage) lookupEnv(name string) (string, bool) {
	if s.getenv != nil {
		return s.getenv(name)
	}
	return os.LookupEnv(name)
}

// Validate checks the stage's `with:` fields.
func (s *Stage) Validate(spec *stages.Spec) error {
	if s.Drain < 0 {
		return fmt.Errorf("drain: negative duration %s", s.Drain)
	}
	if s.StopTimeout < 0 {
		return fmt.Errorf("stop_timeout: negative duration %s", s.StopTimeout)
	}
	for i, j := range s.Before {
		if err := j.validate(spec, fmt.Sprintf("with.before[%d].", i)); err != nil {
			return err
		}
	}
	for i, j := range s.After {
		if err := j.validate(spec, fmt.Sprintf("with.after[%d].", i)); err != nil {
			return err
		}
	}
	if s.Verify != nil {
		return s.Verify.validate(spec)
	}
	return nil
}

// Run deploys every service of the spec to env.Environment.
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	d, err := s.deployer(ctx, env)
	if err != nil {
		return nil, stages.Permanent(err)
	}
	defer d.close()

	out := stages.Outputs{"environment": env.Environment}
	// Before any new container takes traffic: the before: jobs, from the
	// new images (a migration).
	if err := d.hooks(ctx, "before", s.Before); err != nil {
		return out, err
	}
	var prev *previous
	if s.Verify != nil {
		// What runs now is what a failed verification goes back to.
		if prev, err = d.previous(ctx); err != nil {
			return out, err
		}
	}
	if err := d.rollout(ctx, d.want, out); err != nil {
		return out, err
	}
	if s.Verify != nil {
		if err := d.verify(ctx, s.Verify); err != nil {
			if ctx.Err() != nil {
				// Interrupted, not failed: a resume verifies again.
				return out, err
			}
			return out, d.rollback(ctx, prev, err)
		}
	}
	if err := d.hooks(ctx, "after", s.After); err != nil {
		return out, err
	}
	// The registry says what runs where too: the images are tagged with the
	// environment and the version, by digest, so :staging is what staging
	// runs. Registry-side: no layer moves.
	tags := []string{env.Environment}
	if env.Version != "" {
		tags = append(tags, env.Version)
	}
	if err := retag(ctx, d.reg, d.images, tags); err != nil {
		return out, fmt.Errorf("deploy to %s: %w", env.Environment, err)
	}
	d.logf("tagged %s in the registry", strings.Join(tags, ", "))
	return out, nil
}

// rollout deploys every service as wantOf says, in depends_on order,
// through the target, and notes each digest it made live in out.
func (d *deployer) rollout(ctx context.Context, wantOf func(string) (target.Service, error), out stages.Outputs) error {
	var mu sync.Mutex
	done := make(map[string]chan struct{})
	ok := make(map[string]bool)
	order := d.graph.Order()
	for _, name := range order {
		done[name] = make(chan struct{})
	}
	errs := make([]error, len(order))
	// The old containers of each service lose their name and drain at
	// once, and stop only once every service has changed hands: a stop
	// waits for the rejoins under way and holds them off (see
	// dockerhost.Host.Stop), and would hold up the services still to go.
	settled := make(chan struct{})
	d.settleMu.Lock()
	d.settled = settled
	d.settleMu.Unlock()
	var switching sync.WaitGroup
	switching.Add(len(order))
	go func() {
		switching.Wait()
		close(settled)
	}()
	var wg sync.WaitGroup
	for i, name := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once, switched sync.Once
			release := func() { once.Do(func() { close(done[name]) }) }
			defer release()
			defer switched.Do(switching.Done)
			want, err := wantOf(name)
			if err != nil {
				errs[i] = stages.Permanent(fmt.Errorf("deploy %s to %s: %w", name, d.env.Environment, err))
				return
			}
			want.Rank = i
			deps := d.graph.Needs(name)
			prep, canPrepare := d.target.(target.Preparer)
			if len(deps) > 0 && canPrepare {
				// Its dependencies come up first: meanwhile its image is
				// pulled and its containers are created. Where every
				// dependency serves already (a redeploy), they also start
				// and get healthy, reaching the dependencies by name at
				// their old containers: what waits for the dependencies is
				// only the switch, so the new versions take traffic in
				// depends_on order while all of them start at once.
				prep.Prepare(ctx, want, d.allServing(deps))
			}
			for _, dep := range deps {
				<-done[dep]
				mu.Lock()
				depOK := ok[dep]
				mu.Unlock()
				if !depOK {
					d.logf("%s: not deployed: %s was not deployed", name, dep)
					if canPrepare {
						prep.Discard(context.WithoutCancel(ctx), name)
					}
					return
				}
			}
			var retire func(context.Context) error
			err = d.retrying(ctx, name, func() (err error) {
				// A retry starts over from what the target runs.
				retire, err = d.target.Deploy(ctx, want)
				return err
			})
			if err != nil {
				errs[i] = fmt.Errorf("deploy %s to %s: %w", name, d.env.Environment, err)
				return
			}
			mu.Lock()
			ok[name] = true
			out[name] = want.Image
			mu.Unlock()
			// The new containers take the traffic: services that depend
			// on this one go on while the old ones drain and stop.
			release()
			switched.Do(switching.Done)
			if retire != nil {
				if err := d.retrying(ctx, name, func() error { return retire(ctx) }); err != nil {
					errs[i] = fmt.Errorf("deploy %s to %s: %w", name, d.env.Environment, err)
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// An engine that restarts refuses connections for a while. A service's
// deploy that fails on that is done again from its inventory, since every
// step is safe to redo: up to engineAttempts times under engine.Policy,
// waiting engineBackoff after the first failure and twice as long after
// each next one (1s, 2s, 4s, 8s, 16s, each with up to a fifth of jitter).
const (
	engineAttempts = 6
	engineBackoff  = time.Second
)

// policy is the stage's retry policy of engine calls, unless a test set
// its own.
func (s *Stage) policy() retry.Policy {
	if s.retry != nil {
		return *s.retry
	}
	p := engine.Policy()
	p.Attempts, p.Backoff = engineAttempts, engineBackoff
	return p
}

// retrying runs f until it succeeds, fails for a reason another attempt
// does not change (the engine answered, the container is unhealthy), or
// has been tried engineAttempts times.
func (d *deployer) retrying(ctx context.Context, name string, f func() error) error {
	p := d.stage.policy().Reporting(func(w retry.Wait) {
		d.logf("%s: attempt %d of %d failed: %v; trying again in %s", name, w.Attempt, w.Of, w.Err, w.Wait.Round(time.Millisecond))
	})
	err := p.Do(ctx, "deploy "+name, func(context.Context) error { return f() })
	if err != nil && client.IsErrConnectionFailed(err) {
		return fmt.Errorf("docker engine unreachable: %w", err)
	}
	return err
}

// transient says another attempt at what failed with err may succeed: the
// engine did not answer, rather than answered no.
func (d *deployer) transient(err error) bool { return d.stage.policy().Judge(err).Retry }

// deployer is the state of one Run.
type deployer struct {
	stage    *Stage
	env      *stages.Env
	pipeline string
	graph    *dag.Graph
	target   target.Target
	reg      *registry.Client
	images   map[string]string

	logMu   sync.Mutex
	log     io.Writer
	secrets []string // env_from values: never in the log

	live liveServices // what runs, so that an unchanged service keeps its containers

	settleMu sync.Mutex
	settled  chan struct{} // closed once every service of the rollout under way took the traffic or gave up
}

// waitSettled waits until every service of the rollout under way has
// taken the traffic or given up (target.Config.Settled).
func (d *deployer) waitSettled(ctx context.Context) error {
	d.settleMu.Lock()
	ch := d.settled
	d.settleMu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addSecrets adds values the log must hide.
func (d *deployer) addSecrets(values []string) {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	d.secrets = append(d.secrets, values...)
}

func (s *Stage) deployer(ctx context.Context, env *stages.Env) (*deployer, error) {
	if env.Spec == nil {
		return nil, errors.New("deploy: no pipeline spec")
	}
	e, ok := env.Spec.Environments[env.Environment]
	if !ok {
		return nil, fmt.Errorf("deploy: unknown environment %q", env.Environment)
	}
	if len(e.Hosts) == 0 {
		return nil, fmt.Errorf("deploy to %s: no hosts", env.Environment)
	}
	images := make(map[string]string)
	for _, name := range env.Spec.ServiceNames() {
		ref := env.Images[name]
		if ref == "" {
			return nil, fmt.Errorf("deploy %s to %s: no image in the release", name, env.Environment)
		}
		if !strings.Contains(ref, "@sha256:") {
			return nil, fmt.Errorf("deploy %s to %s: image %s is not a digest reference", name, env.Environment, ref)
		}
		images[name] = ref
	}
	g, err := serviceGraph(env.Spec)
	if err != nil {
		return nil, fmt.Errorf("deploy to %s: %w", env.Environment, err)
	}
	d := &deployer{
		stage:    s,
		env:      env,
		pipeline: pipelineName(env.Spec),
		graph:    g,
		images:   images,
		reg:      registry.New(env.Spec, os.Getenv),
		log:      env.Log,
	}
	if d.log == nil {
		d.log = io.Discard
	}
	cfg := s.targetConfig(env.Spec, env.Environment)
	cfg.Registry = d.reg
	cfg.Fence = env.Fence
	cfg.Logf = d.logf
	cfg.Hook = s.hook
	cfg.Transient = d.transient
	cfg.Settled = d.waitSettled
	if e.Proxy != nil && e.Proxy.Caddy != "" {
		cfg.Proxy = newProxy(env.Spec, env.Environment, d.pipeline, d.logf)
		if err := caddy.CheckMigrateReq(e.Proxy.Caddy); err != nil {
			d.logf("warning: %v", err)
		}
	}
	t, err := s.open(ctx, env.Spec, env.Environment, cfg)
	if err != nil {
		return nil, fmt.Errorf("deploy to %s: %w", env.Environment, err)
	}
	d.target = t
	if c, ok := t.(target.Checker); ok {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.Check(ctx); err != nil {
			t.Close()
			return nil, fmt.Errorf("deploy to %s: %w", env.Environment, err)
		}
	}
	return d, nil
}

// serviceGraph is the services and their depends_on, for the DAG package
// to order; the loader has rejected cycles and unknown names already.
func serviceGraph(spec *stages.Spec) (*dag.Graph, error) {
	nodes := make([]dag.Node, 0, len(spec.Services))
	for _, name := range spec.ServiceNames() {
		nodes = append(nodes, dag.Node{Name: name, Needs: spec.Services[name].DependsOn})
	}
	return dag.Build(nodes)
}

// pipelineName is what the labels call the pipeline.
func pipelineName(spec *stages.Spec) string {
	if spec.Name == "" {
		return "release"
	}
	return spec.Name
}

// targetConfig is what every target of the environment is opened with.
func (s *Stage) targetConfig(spec *stages.Spec, environment string) target.Config {
	return target.Config{
		Spec:        spec,
		Environment: environment,
		Pipeline:    pipelineName(spec),
		Hosts:       spec.Environments[environment].Hosts,
		Network:     spec.NetworkName(environment),
		Engine:      []engine.Option{engine.Bounds(spec.Timeouts)},
		Drain:       s.drain(),
		StopTimeout: s.stopTimeout(),
	}
}

// open opens the environment's target, chosen by name.
func (s *Stage) open(ctx context.Context, spec *stages.Spec, environment string, cfg target.Config) (target.Target, error) {
	targets := s.targets
	if targets == nil {
		targets = Targets
	}
	open, err := targets.Lookup(spec.TargetName(environment))
	if err != nil {
		return nil, err
	}
	return open(ctx, cfg)
}

func (d *deployer) close() {
	if d.target != nil {
		d.target.Close()
	}
}

func (d *deployer) logf(format string, args ...any) {
	msg := fmt.Sprintf("deploy %s: "+format+"\n", append([]any{d.env.Environment}, args...)...)
	// What the registry chain has handed out so far never reaches the
	// log, whatever error quotes it.
	msg = redact.String(msg, d.reg.Secrets()...)
	d.logMu.Lock()
	defer d.logMu.Unlock()
	msg = redact.String(msg, d.secrets...)
	io.WriteString(d.log, msg)
}

func (s *Stage) drain() time.Duration {
	if s.Drain > 0 {
		return s.Drain
	}
	return DefaultDrain
}

func (s *Stage) stopTimeout() time.Duration {
	if s.StopTimeout > 0 {
		return s.StopTimeout
	}
	return DefaultStopTimeout
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
