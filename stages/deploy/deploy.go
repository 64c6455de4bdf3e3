// Package deploy is the "deploy" stage: it runs a release's images, by
// digest, on every Docker host of an environment, and reads back what runs
// there for `release status`.
//
// A deploy of one service, on all the environment's hosts at once:
//
//  1. Look at what runs, by labels. A running container with the intended
//     configuration (digest, env, volumes, port) is adopted once healthy;
//     stopped or duplicate ones are removed.
//  2. With a proxy (strategy start-first): start the new container beside
//     the old one on each host and wait for its health check; check it once
//     more and switch the service's upstreams in Caddy to the new
//     containers, all hosts in one change; let in-flight requests drain;
//     stop the old containers with a grace period and remove them. A new container that does not become
//     healthy is removed and the old ones keep serving.
//  3. Without a proxy (strategy recreate): stop the old container, start the
//     new one and wait for its health; remove the old one, or, when the new
//     one is not healthy, remove it and start the old one again.
//
// An environment with `swarm: true` runs Swarm services instead (swarm.go).
//
// Services are deployed in depends_on order, independent ones in parallel.
// Every step is safe to redo, so a deploy killed anywhere converges on the
// next run: one container per service and host, at the intended digest.
// For the same reason a service whose engine cannot be reached (refused or
// cut connections, as while it restarts) is deployed again from step 1, a
// bounded number of times with growing waits, before the deploy fails.
package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/engine"
	"github.com/sweepboard/release/stages/internal/registry"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "deploy", New: func() stages.Stage { return &Stage{} }}

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

	// retry, when set (by a test), replaces the retry policy of engine
	// calls.
	retry *retry.Policy
}

// Validate checks the stage's `with:` fields.
func (s *Stage) Validate(*stages.Spec) error {
	if s.Drain < 0 {
		return fmt.Errorf("drain: negative duration %s", s.Drain)
	}
	if s.StopTimeout < 0 {
		return fmt.Errorf("stop_timeout: negative duration %s", s.StopTimeout)
	}
	return nil
}

// hook, when set by a test, is called at the points where a killed deploy
// leaves the most to clean up: "started" once the new containers of a
// service are healthy, "switched" once the proxy points at them.
var hook func(point, service string)

// Run deploys every service of the spec to every host of env.Environment.
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	d, err := s.deployer(env)
	if err != nil {
		return nil, stages.Permanent(err)
	}
	defer d.close()

	out := stages.Outputs{"environment": env.Environment}
	var mu sync.Mutex
	done := make(map[string]chan struct{})
	ok := make(map[string]bool)
	order := env.Spec.DeployOrder()
	for _, name := range order {
		done[name] = make(chan struct{})
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, name := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { close(done[name]) }) }
			defer release()
			deps := env.Spec.Services[name].DependsOn
			var parts []*onHost
			if len(deps) > 0 && !d.swarm {
				// Its dependencies come up first: meanwhile its image is
				// pulled and its containers are created, not started.
				parts = d.ahead(ctx, name)
			}
			for _, dep := range deps {
				<-done[dep]
				mu.Lock()
				depOK := ok[dep]
				mu.Unlock()
				if !depOK {
					d.logf("%s: not deployed: %s was not deployed", name, dep)
					d.dropAhead(context.WithoutCancel(ctx), name, parts)
					return
				}
			}
			var retire func() error
			var err error
			if d.swarm {
				err = d.swarmService(ctx, name)
			} else {
				err = d.retrying(ctx, name, func() (err error) {
					// A retry starts over from what the hosts run.
					known := parts
					parts = nil
					retire, err = d.service(ctx, name, known)
					return err
				})
			}
			if err != nil {
				errs[i] = fmt.Errorf("deploy %s to %s: %w", name, env.Environment, err)
				return
			}
			mu.Lock()
			ok[name] = true
			out[name] = d.images[name]
			mu.Unlock()
			// The new containers take the traffic: services that depend
			// on this one go on while the old ones drain and stop.
			release()
			if retire != nil {
				if err := d.retrying(ctx, name, retire); err != nil {
					errs[i] = fmt.Errorf("deploy %s to %s: %w", name, env.Environment, err)
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
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
	hosts    []*host
	reg      *registry.Client
	proxy    *caddy // nil: strategy recreate
	swarm    bool   // services are Swarm services, through hosts[0]
	images   map[string]string

	logMu sync.Mutex
	log   io.Writer
}

func (s *Stage) deployer(env *stages.Env) (*deployer, error) {
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
	d := &deployer{
		stage:    s,
		env:      env,
		pipeline: env.Spec.Name,
		images:   images,
		reg:      registry.New(env.Spec, os.Getenv),
		log:      env.Log,
	}
	if d.log == nil {
		d.log = io.Discard
	}
	if d.pipeline == "" {
		d.pipeline = "release"
	}
	if e.Proxy != nil && e.Proxy.Caddy != "" {
		d.proxy = newCaddy(e.Proxy.Caddy)
		if err := checkMigrateReq(e.Proxy.Caddy); err != nil {
			d.logf("warning: %v", err)
		}
	}
	for _, addr := range e.Hosts {
		h, err := openHost(addr, engine.Bounds(env.Spec.Timeouts))
		if err != nil {
			d.close()
			return nil, err
		}
		d.hosts = append(d.hosts, h)
	}
	if e.Swarm {
		d.swarm = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := checkManager(ctx, d.hosts[0]); err != nil {
			d.close()
			return nil, fmt.Errorf("deploy to %s: %w", env.Environment, err)
		}
	}
	return d, nil
}

func (d *deployer) close() {
	for _, h := range d.hosts {
		h.cli.Close()
	}
}

func (d *deployer) logf(format string, args ...any) {
	msg := fmt.Sprintf("deploy %s: "+format+"\n", append([]any{d.env.Environment}, args...)...)
	// What the registry chain has handed out so far never reaches the
	// log, whatever error quotes it.
	msg = redact.String(msg, d.reg.Secrets()...)
	d.logMu.Lock()
	defer d.logMu.Unlock()
	io.WriteString(d.log, msg)
}

func (d *deployer) drain() time.Duration {
	if d.stage.Drain > 0 {
		return d.stage.Drain
	}
	return DefaultDrain
}

func (d *deployer) stopTimeout() time.Duration {
	if d.stage.StopTimeout > 0 {
		return d.stage.StopTimeout
	}
	return DefaultStopTimeout
}

// pull pulls an image with the credentials the registry chain finds for
// its registry. The engine quotes the registry's answer, which may echo
// the request's Authorization header: the error is redacted.
func (d *deployer) pull(ctx context.Context, h *host, ref string) error {
	auth, err := d.reg.EngineAuth(ctx, ref)
	if err != nil {
		return stages.Permanent(fmt.Errorf("pull %s on %s: %w", ref, h.addr, err))
	}
	return d.reg.Error(registryOf(ref), h.pull(ctx, ref, auth))
}

// registryOf is the registry part of an image reference, "" when it is
// not one.
func registryOf(ref string) string {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return ""
	}
	return r.Context().RegistryStr()
}

// want is the container spec of a service in this environment.
func (d *deployer) want(name string) spec {
	svc := d.env.Spec.Services[name]
	envList := make([]string, 0, len(svc.Env))
	for k, v := range svc.Env {
		envList = append(envList, k+"="+v)
	}
	slices.Sort(envList)
	s := spec{
		Image:       d.images[name],
		Env:         envList,
		Port:        svc.Port,
		Volumes:     slices.Clone(svc.Volumes),
		StopTimeout: d.stopTimeout(),
	}
	hash := configHash(s)
	s.Name = containerName(d.pipeline, d.env.Environment, name, hash)
	s.Labels = map[string]string{
		LabelPipeline:    d.pipeline,
		LabelEnvironment: d.env.Environment,
		LabelService:     name,
		LabelVersion:     d.env.Version,
		LabelDigest:      s.Image,
		LabelRunID:       d.env.RunID,
		LabelConfig:      hash,
	}
	return s
}

// configHash identifies what makes two containers of a service the same:
// a running one with the same hash is adopted instead of replaced.
func configHash(s spec) string {
	b, _ := json.Marshal(struct {
		Image   string
		Env     []string
		Port    int
		Volumes []string
	}{s.Image, s.Env, s.Port, s.Volumes})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// containerName is unique per pipeline, environment, service and
// configuration, so environments sharing an engine never clash and the old
// and new containers of a start-first deploy can run side by side.
func containerName(pipeline, environment, service, hash string) string {
	return sanitize(pipeline) + "-" + sanitize(environment) + "-" + sanitize(service) + "-" + hash
}

// routeID names a service's server and handler in Caddy's config.
func routeID(pipeline, environment, service string) string {
	return "release_" + sanitize(pipeline) + "_" + sanitize(environment) + "_" + sanitize(service)
}

// sanitize keeps the characters container names and Caddy ids allow.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return b.String()
}

// onHost is one host's part of a service deploy.
type onHost struct {
	h     *host
	known bool   // the inventory below is taken: inventory does not list again
	cur   *box   // the container with the intended configuration
	ready *box   // created ahead for the intended configuration, not started
	addr  string // where cur is reached, when it publishes a port
	old   []box  // other containers of the service, newest first
	err   error
}

// service deploys one service to all hosts. Once the new containers take
// the traffic it returns; retire, when not nil, then drains and removes
// the old ones. parts, when not nil, is what ahead found and made.
func (d *deployer) service(ctx context.Context, name string, parts []*onHost) (retire func() error, err error) {
	w := d.want(name)
	svc := d.env.Spec.Services[name]
	if parts == nil {
		parts = d.parts()
	}
	if d.proxy == nil {
		err = d.recreate(ctx, name, w, svc, parts)
	} else {
		retire, err = d.startFirst(ctx, name, w, svc, parts)
	}
	// A container made ahead that a failure left unused goes.
	d.dropAhead(context.WithoutCancel(ctx), name, parts)
	return retire, err
}

// ahead does on every host what a service's deploy can do before its
// dependencies are up: the inventory, the pull and the creation of its new
// container, which then only has to start. It is best effort: a host where
// a step fails is left for the deploy to do again from the start, and the
// deploy reports what fails then.
func (d *deployer) ahead(ctx context.Context, name string) []*onHost {
	w := d.want(name)
	parts := d.parts()
	_ = eachHost(parts, func(p *onHost) error {
		if err := d.inventory(ctx, p, name, w); err != nil || p.cur != nil {
			return err // or adopted as it runs
		}
		if err := d.pull(ctx, p.h, w.Image); err != nil {
			return err
		}
		b, err := p.h.create(ctx, w)
		if err != nil {
			return err
		}
		p.ready = &b
		deps, verb := d.env.Spec.Services[name].DependsOn, "is"
		if len(deps) > 1 {
			verb = "are"
		}
		d.logf("%s on %s: created %s ahead; it starts once %s %s up", name, p.h.addr, b.Name, strings.Join(deps, ", "), verb)
		return nil
	})
	for _, p := range parts {
		if p.err != nil {
			*p = onHost{h: p.h}
		}
	}
	return parts
}

// parts returns a fresh part of a service deploy for every host.
func (d *deployer) parts() []*onHost {
	parts := make([]*onHost, len(d.hosts))
	for i, h := range d.hosts {
		parts[i] = &onHost{h: h}
	}
	return parts
}

// dropAhead removes the containers ahead created for a service that is not
// deployed after all.
func (d *deployer) dropAhead(ctx context.Context, name string, parts []*onHost) {
	for _, p := range parts {
		if p.ready == nil {
			continue
		}
		if err := p.h.remove(ctx, p.ready.ID); err != nil {
			d.logf("%s on %s: %v", name, p.h.addr, err)
		}
		p.ready = nil
	}
}

// inventory finds the service's containers on a host: the one with the
// intended configuration, if it runs, and the others. Stopped containers
// with the intended configuration, and duplicates, are removed.
func (d *deployer) inventory(ctx context.Context, p *onHost, name string, w spec) error {
	if p.known {
		return nil
	}
	boxes, err := p.h.list(ctx, map[string]string{
		LabelPipeline:    d.pipeline,
		LabelEnvironment: d.env.Environment,
		LabelService:     name,
	})
	if err != nil {
		return err
	}
	p.cur, p.old = nil, nil
	for _, b := range boxes {
		switch {
		case b.Config == w.Labels[LabelConfig] && b.Running && p.cur == nil:
			b := b
			p.cur = &b
		case b.Config == w.Labels[LabelConfig]:
			if err := p.h.remove(ctx, b.ID); err != nil {
				return err
			}
		default:
			p.old = append(p.old, b)
		}
	}
	p.known = true
	return nil
}

// ensureNew makes p.cur a healthy container with the intended
// configuration: adopted when one runs already, started otherwise.
func (d *deployer) ensureNew(ctx context.Context, p *onHost, name string, w spec, svc stages.Service) error {
	if p.cur != nil {
		d.logf("%s on %s: found %s", name, p.h.addr, p.cur.Name)
	} else {
		b, err := d.create(ctx, p, w)
		if err != nil {
			return err
		}
		if err := d.launch(ctx, p, name, w, b); err != nil {
			return err
		}
	}
	return d.awaitNew(ctx, p, name, svc)
}

// create returns the service's new container on p's host, not started:
// the one made ahead, or one made now.
func (d *deployer) create(ctx context.Context, p *onHost, w spec) (box, error) {
	if b := p.ready; b != nil {
		p.ready = nil
		return *b, nil
	}
	if err := d.pull(ctx, p.h, w.Image); err != nil {
		return box{}, err
	}
	return p.h.create(ctx, w)
}

// launch starts b, a new container of w, as p.cur. A start that fails
// because the host port the engine picked is taken is tried again with a
// container created anew.
func (d *deployer) launch(ctx context.Context, p *onHost, name string, w spec, b box) error {
	for attempt := 1; ; attempt++ {
		err := d.startNew(ctx, p, name, b)
		if err == nil || !portTaken(err.Error()) || attempt == publishAttempts {
			return err
		}
		d.logf("%s on %s: the host port the engine picked is held by another process; starting again (attempt %d of %d)", name, p.h.addr, attempt+1, publishAttempts)
		if b, err = p.h.create(ctx, w); err != nil {
			return err
		}
	}
}

// publishAttempts bounds the starts of a container whose published port
// the engine could not bind.
const publishAttempts = 5

// portTaken says, from the engine's error or a swarm task's, that a
// container did not start because the host port the engine picked for it
// is held by a process the engine does not know of: another engine on the
// same host, or any program listening there. The engine picks from the
// same range as the kernel and tries ten ports in a row; a new start moves
// on to the next ones.
func portTaken(msg string) bool {
	return strings.Contains(msg, "address already in use")
}

// startNew starts a created container as p.cur; one that does not start
// is removed.
func (d *deployer) startNew(ctx context.Context, p *onHost, name string, b box) error {
	if err := p.h.start(ctx, b); err != nil {
		_ = p.h.remove(context.WithoutCancel(ctx), b.ID)
		return err
	}
	b.Running = true
	p.cur = &b
	d.logf("%s on %s: started %s (%s)", name, p.h.addr, b.Name, b.Labels[LabelDigest])
	return nil
}

// awaitNew waits for p.cur to be healthy. An unhealthy one is removed.
func (d *deployer) awaitNew(ctx context.Context, p *onHost, name string, svc stages.Service) error {
	addr, err := waitHealthy(ctx, p.h, *p.cur, svc.Port, svc.Health)
	if err != nil && d.transient(err) {
		// Nothing is known of the container: the engine did not answer
		// (its error names the host).
		return err
	}
	if err != nil {
		if rmErr := p.h.remove(context.WithoutCancel(ctx), p.cur.ID); rmErr != nil {
			err = errors.Join(err, rmErr)
		} else {
			d.logf("%s on %s: removed unhealthy %s", name, p.h.addr, p.cur.Name)
		}
		p.cur = nil
		return stages.Permanent(fmt.Errorf("%s: %w", p.h.addr, err))
	}
	p.addr = addr
	d.logf("%s on %s: %s healthy", name, p.h.addr, p.cur.Name)
	return nil
}

// eachHost runs f on every host's part at once and joins the errors.
func eachHost(parts []*onHost, f func(p *onHost) error) error {
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.err = f(p)
		}()
	}
	wg.Wait()
	errs := make([]error, 0, len(parts))
	for _, p := range parts {
		errs = append(errs, p.err)
	}
	return errors.Join(errs...)
}

func (d *deployer) startFirst(ctx context.Context, name string, w spec, svc stages.Service, parts []*onHost) (retire func() error, err error) {
	err = eachHost(parts, func(p *onHost) error {
		if err := d.inventory(ctx, p, name, w); err != nil {
			return err
		}
		return d.ensureNew(ctx, p, name, w, svc)
	})
	listen := ""
	if px := d.env.Spec.Environments[d.env.Environment].Proxy; px != nil {
		listen = px.Listen[name]
	}
	r := route{ID: routeID(d.pipeline, d.env.Environment, name), Listen: listen}
	if err != nil {
		return nil, errors.Join(err, d.abandon(context.WithoutCancel(ctx), name, r, svc, parts))
	}
	if hook != nil {
		hook("started", name)
	}

	if listen != "" && svc.Port > 0 {
		// The engine may have stopped or restarted the new containers since
		// their health check (a restarted engine publishes their ports
		// anew): check again, right before they get the traffic.
		err := eachHost(parts, func(p *onHost) error {
			addr, err := waitHealthy(ctx, p.h, *p.cur, svc.Port, svc.Health)
			if err != nil && !d.transient(err) {
				return fmt.Errorf("%s: %w", p.h.addr, err)
			}
			p.addr = addr
			return err
		})
		if err != nil {
			return nil, errors.Join(err, d.abandon(context.WithoutCancel(ctx), name, r, svc, parts))
		}
		ups := make([]string, 0, len(parts))
		for _, p := range parts {
			ups = append(ups, p.addr)
		}
		// Fencing: the switch is the side effect that matters; only a run
		// that still holds the environment makes it.
		if d.env.Fence != nil {
			if err := d.env.Fence(ctx); err != nil {
				return nil, errors.Join(fmt.Errorf("switch %s: %w", name, err), d.abandon(context.WithoutCancel(ctx), name, r, svc, parts))
			}
		}
		start := time.Now()
		if err := d.proxy.switchTo(ctx, r, ups); err != nil {
			return nil, fmt.Errorf("switch %s to %s: %w", r.Listen, strings.Join(ups, ","), err)
		}
		d.logf("%s: %s now proxies to %s (switch took %s)", name, r.Listen, strings.Join(ups, ", "), time.Since(start).Round(time.Millisecond))
		if hook != nil {
			hook("switched", name)
		}
	}

	anyOld := false
	for _, p := range parts {
		anyOld = anyOld || len(p.old) > 0
	}
	if !anyOld {
		return nil, nil
	}
	return func() error {
		if listen != "" && svc.Port > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d.drain()):
			}
		}
		return eachHost(parts, func(p *onHost) error {
			for _, b := range p.old {
				if err := d.retire(ctx, p.h, name, b); err != nil {
					return err
				}
			}
			return nil
		})
	}, nil
}

// retire stops an old container with grace and removes it.
func (d *deployer) retire(ctx context.Context, h *host, name string, b box) error {
	if b.Running {
		if err := h.stop(ctx, b, d.stopTimeout()); err != nil {
			return err
		}
	}
	if err := h.remove(ctx, b.ID); err != nil {
		return err
	}
	d.logf("%s on %s: removed %s", name, h.addr, b.Name)
	return nil
}

// abandon undoes a start-first deploy that failed on some host: the proxy
// points at the old containers (a killed earlier attempt may have switched
// it already) and the new containers are removed. When no old container
// runs anywhere, the healthy new ones are all there is and stay.
func (d *deployer) abandon(ctx context.Context, name string, r route, svc stages.Service, parts []*onHost) error {
	var oldUps []string
	oldRunning := false
	for _, p := range parts {
		i := slices.IndexFunc(p.old, func(b box) bool { return b.Running })
		if i < 0 {
			continue
		}
		oldRunning = true
		if svc.Port == 0 {
			continue
		}
		st, err := p.h.state(ctx, p.old[i].ID, svc.Port)
		if err == nil && st.Running && st.HostPort != "" {
			oldUps = append(oldUps, net.JoinHostPort(p.h.dialIP, st.HostPort))
		}
	}
	if !oldRunning {
		return nil
	}
	if r.Listen != "" && len(oldUps) > 0 {
		if err := d.proxy.switchTo(ctx, r, oldUps); err != nil {
			return err
		}
	}
	var errs []error
	for _, p := range parts {
		if p.cur == nil {
			continue
		}
		if err := p.h.remove(ctx, p.cur.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		d.logf("%s on %s: removed %s, the old version keeps serving", name, p.h.addr, p.cur.Name)
		p.cur = nil
	}
	return errors.Join(errs...)
}

func (d *deployer) recreate(ctx context.Context, name string, w spec, svc stages.Service, parts []*onHost) error {
	return eachHost(parts, func(p *onHost) error {
		if err := d.inventory(ctx, p, name, w); err != nil {
			return err
		}
		if p.cur != nil {
			// A killed earlier attempt got this far: keep its container if
			// it is healthy, start over otherwise.
			if err := d.ensureNew(ctx, p, name, w, svc); err == nil {
				for _, b := range p.old {
					if err := d.retire(ctx, p.h, name, b); err != nil {
						return err
					}
				}
				return nil
			}
		}
		// Keep the newest old container to fall back on; the rest go.
		var prev *box
		for i, b := range p.old {
			if i == 0 {
				prev = &p.old[0]
				continue
			}
			if err := d.retire(ctx, p.h, name, b); err != nil {
				return err
			}
		}
		// Pulling and creating are the slow parts: done while the old one
		// still runs.
		nb, err := d.create(ctx, p, w)
		if err != nil {
			return err
		}
		if prev != nil && prev.Running {
			if err := p.h.stop(ctx, *prev, d.stopTimeout()); err != nil {
				_ = p.h.remove(context.WithoutCancel(ctx), nb.ID)
				return err
			}
			d.logf("%s on %s: stopped %s", name, p.h.addr, prev.Name)
		}
		err = d.launch(ctx, p, name, w, nb)
		if err == nil {
			err = d.awaitNew(ctx, p, name, svc)
		}
		if err != nil {
			if prev != nil {
				bg := context.WithoutCancel(ctx)
				if startErr := p.h.start(bg, *prev); startErr != nil {
					return errors.Join(err, startErr)
				}
				if _, healthErr := waitHealthy(bg, p.h, *prev, svc.Port, svc.Health); healthErr != nil {
					return errors.Join(err, fmt.Errorf("start %s again: %w", prev.Name, healthErr))
				}
				d.logf("%s on %s: started %s again", name, p.h.addr, prev.Name)
			}
			return err
		}
		if hook != nil {
			hook("started", name)
		}
		if prev != nil {
			if err := p.h.remove(ctx, prev.ID); err != nil {
				return err
			}
			d.logf("%s on %s: removed %s", name, p.h.addr, prev.Name)
		}
		return nil
	})
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
)
