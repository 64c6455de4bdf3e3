// Package docker is the deploy target "docker": each service runs as
// containers on every plain Docker host of an environment (or the hosts
// its environment settings pin it to).
//
// Every host has the environment network, a user-defined bridge named
// after the pipeline and environment (labels release.pipeline and
// release.environment), on which each healthy container answers to its
// service's name: http://SERVICE:PORT reaches a healthy container from any
// container of the environment on that host, during deploys too, with or
// without a proxy. A container's port is also published on an ephemeral
// host port of the engine's default bridge, where the deploy's health
// checks and a proxy on the host reach it; no fixed host port is bound
// unless the service's `publish:` asks for one.
//
// A deploy of one service, on all its hosts at once, is three steps:
//
//  1. Inventory: look at what runs, by labels. A running container with
//     the intended configuration (see target.Service.Hash) is adopted once
//     healthy; stopped or duplicate ones are removed (see sortOut).
//  2. Boot, start-first: create the new container on the network without
//     its name, start it beside the old one and wait for its health check.
//     Where the services it depends on serve already, Prepare does this
//     ahead, while they deploy. Then the new container takes the service's
//     name (beside the old one, which still has it), and with a proxy,
//     checked again, the proxy's upstreams are switched to the new
//     containers, all hosts in one change. A new container that does not
//     become healthy is removed and the old ones keep serving, name and
//     proxy route included.
//  3. Retire: the old containers lose the name (they stay on the network,
//     to finish what they do), in-flight requests drain, and they are
//     stopped with a grace period and removed.
//
// With replicas, a service runs that many containers on each of its hosts,
// all under its name, and the three steps go replica after replica (see
// roll). A service pinned to some of the environment's hosts runs only
// there; what ran of it elsewhere is retired.
//
// A service that publishes a fixed host port (`publish:`) cannot run two
// containers at once on a host: its old container stops right before the
// new one starts, and starts again when the new one is not healthy.
//
// The engine cannot change an endpoint's aliases: a container gains or
// loses its name by leaving the network and joining it again, at the
// address it had (dockerhost.Host.Alias, Unalias). The network is made
// with a subnet of its own, so that the engine lets it keep the address;
// its connections over the network, in flight or idle in a client's pool,
// outlive the gap of a few hundred milliseconds as TCP sends again.
package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// Name is the target's name in the pipeline file.
const Name = "docker"

// Target deploys to plain Docker hosts.
type Target struct {
	cfg   target.Config
	hosts []*dockerhost.Host

	mu       sync.Mutex
	prepared map[string][]*onHost // by service, what Prepare made
	netMu    sync.Mutex
	networks map[string]bool             // by host address, the network is there
	starts   map[*dockerhost.Host]*turns // whose start goes next, by host
}

// startsAtOnce is how many container starts a deploy asks of one engine
// at a time, the lowest rank waiting first (target.Service.Rank). The
// engine overlaps about two starts, and a start takes longer the more run
// beside it: with every start asked at once, the service that depends on
// nothing could come up last and hold up every handover behind it. With
// two at a time, the eight chained services of BenchmarkDeployChain
// redeployed in 6.17–6.32 s against 6.60–6.63 s (one at a time: 6.94 s).
const startsAtOnce = 2

// Open connects to every host of the environment.
func Open(_ context.Context, cfg target.Config) (target.Target, error) {
	t := &Target{cfg: cfg, prepared: map[string][]*onHost{}, networks: map[string]bool{}, starts: map[*dockerhost.Host]*turns{}}
	for _, addr := range cfg.Hosts {
		h, err := dockerhost.Open(addr, cfg.Engine...)
		if err != nil {
			t.Close()
			return nil, err
		}
		t.hosts = append(t.hosts, h)
		t.starts[h] = &turns{width: startsAtOnce}
	}
	return t, nil
}

// Close closes the connections to the hosts.
func (t *Target) Close() error {
	for _, h := range t.hosts {
		h.Close()
	}
	return nil
}

// ContainerName is unique per pipeline, environment, service and
// configuration, so environments sharing an engine never clash and the old
// and new containers of a start-first deploy can run side by side.
func ContainerName(pipeline, environment, service, hash string) string {
	return target.Sanitize(pipeline) + "-" + target.Sanitize(environment) + "-" + target.Sanitize(service) + "-" + hash
}

// container is a container of one service as a deploy sees it.
type container = dockerhost.Container

// onHost is one host's part of a service deploy.
type onHost struct {
	h     *dockerhost.Host
	known bool       // the inventory below is taken: inventory does not list again
	cur   *container // the container with the intended configuration
	ready *container // created ahead for the intended configuration, not started
	// warm says cur was started ahead (Prepare) and is not yet named or
	// routed: until the deploy takes it, a failure elsewhere removes it.
	warm bool
	// failed is why the container started ahead did not get healthy; the
	// deploy reports it.
	failed error
	addr   string // where cur is reached, when it publishes a port
	old    []container
	// off is a host of the environment that does not run the service
	// (environments.ENV.services.NAME.hosts): what runs there of it goes.
	off bool
	err error
}

// spec is the container the deploy creates for s.
func (t *Target) spec(s target.Service) dockerhost.Spec {
	return dockerhost.Spec{
		Name:        ContainerName(t.cfg.Pipeline, t.cfg.Environment, s.Name, s.Hash) + replicaSuffix(s.Labels[LabelReplica]),
		Image:       s.Image,
		Env:         s.Env,
		Labels:      s.Labels,
		Port:        s.Port(),
		Publish:     s.Config.Publish,
		Volumes:     slices.Clone(s.Config.Service.Volumes),
		StopTimeout: s.StopTimeout,
		Restart:     s.Config.Restart,
		Memory:      s.Config.Memory,
		CPUs:        s.Config.CPUs,
		Network:     t.cfg.Network,
	}
}

// LabelReplica numbers the containers of a service with replicas on a
// host: 1, 2, …
const LabelReplica = "release.replica"

// replicaSuffix tells a replica's container name from the first one's.
func replicaSuffix(slot string) string {
	if slot == "" || slot == "1" {
		return ""
	}
	return "-" + slot
}

// NetworkLabels are the labels of an environment network.
func NetworkLabels(pipeline, environment string) map[string]string {
	return map[string]string{target.LabelPipeline: pipeline, target.LabelEnvironment: environment}
}

// network makes sure the environment network is on h, once per deploy.
// The services of a deploy go in parallel: one at a time asks for it.
func (t *Target) network(ctx context.Context, h *dockerhost.Host) error {
	t.netMu.Lock()
	defer t.netMu.Unlock()
	if t.networks[h.Addr()] {
		return nil
	}
	if _, err := h.EnsureNetwork(ctx, t.cfg.Network, dockerhost.Bridge, NetworkLabels(t.cfg.Pipeline, t.cfg.Environment)); err != nil {
		if t.cfg.IsTransient(err) {
			return err
		}
		return stages.Permanent(err)
	}
	t.networks[h.Addr()] = true
	return nil
}

// pull pulls an image with the credentials the registry chain finds for
// its registry. The engine quotes the registry's answer, which may echo
// the request's Authorization header: the error is redacted.
func (t *Target) pull(ctx context.Context, h *dockerhost.Host, ref string) error {
	reg := t.cfg.Registry
	auth, err := reg.EngineAuth(ctx, ref)
	if err != nil {
		return stages.Permanent(fmt.Errorf("pull %s on %s: %w", ref, h.Addr(), err))
	}
	return reg.Error(registryOf(ref), h.Pull(ctx, ref, auth))
}

// parts returns a fresh part of a service deploy for every host.
func (t *Target) parts(s target.Service) []*onHost {
	parts := make([]*onHost, len(t.hosts))
	for i, h := range t.hosts {
		parts[i] = &onHost{h: h, off: !runsOn(s, h.Addr())}
	}
	return parts
}

// runsOn says whether the service runs on the host at addr.
func runsOn(s target.Service, addr string) bool {
	return len(s.Config.Hosts) == 0 || slices.Contains(s.Config.Hosts, addr)
}

// Deploy deploys one service to all hosts.
func (t *Target) Deploy(ctx context.Context, s target.Service) (retire func(context.Context) error, err error) {
	t.mu.Lock()
	parts := t.prepared[s.Name]
	delete(t.prepared, s.Name)
	t.mu.Unlock()
	if parts == nil {
		parts = t.parts(s)
	}
	for _, p := range parts {
		p.warm = false // the deploy takes what was started ahead
		if p.failed != nil {
			return nil, errors.Join(p.failed, t.abandon(context.WithoutCancel(ctx), s, parts, nil))
		}
	}
	switch {
	case s.Config.Publish != "":
		err = t.recreate(ctx, s, parts)
	case s.Config.Replicas > 1:
		retire, err = t.roll(ctx, s, parts)
	default:
		retire, err = t.startFirst(ctx, s, parts, nil, true)
	}
	// A container made ahead that a failure left unused goes.
	t.dropAhead(context.WithoutCancel(ctx), s.Name, parts)
	return retire, err
}

// Prepare does on every host what a service's deploy can do before its
// dependencies are up: the inventory, the pull and the creation of its new
// container, which then only has to start. With warm (its dependencies
// serve already) the container also starts and is awaited healthy, not
// named: the deploy finds it running with the intended configuration and
// goes on to the switch. It is best effort: a host where a step fails is
// left for the deploy to do again from the start, and the deploy reports
// what fails then; a new container that is not healthy is removed, and
// the deploy reports that without starting another.
func (t *Target) Prepare(ctx context.Context, s target.Service, warm bool) {
	w := t.spec(s)
	parts := t.parts(s)
	warm = warm && s.Config.Replicas <= 1 // replicas roll one at a time
	_ = eachHost(parts, func(p *onHost) error {
		if err := t.inventory(ctx, p, s); err != nil || p.cur != nil || p.off || s.Config.Publish != "" {
			return err // or adopted as it runs, or not made ahead
		}
		if err := t.network(ctx, p.h); err != nil {
			return err
		}
		if err := t.pull(ctx, p.h, w.Image); err != nil {
			return err
		}
		c, err := p.h.Create(ctx, w)
		if err != nil {
			return err
		}
		deps, verb := strings.Join(s.Config.Service.DependsOn, ", "), "is"
		if len(s.Config.Service.DependsOn) > 1 {
			verb = "are"
		}
		if !warm {
			p.ready = &c
			t.cfg.Log("%s on %s: created %s ahead; it starts once %s %s up", s.Name, p.h.Addr(), c.Name, deps, verb)
			return nil
		}
		if err := t.launch(ctx, p, s, c); err != nil {
			return err
		}
		p.warm = true
		if err := t.awaitNew(ctx, p, s); err != nil {
			if !t.cfg.IsTransient(err) {
				p.failed = err
				return nil
			}
			return err
		}
		t.cfg.Log("%s on %s: started %s ahead; it takes the traffic once %s %s up", s.Name, p.h.Addr(), p.cur.Name, deps, verb)
		return nil
	})
	for _, p := range parts {
		if p.err != nil {
			t.dropAhead(context.WithoutCancel(ctx), s.Name, []*onHost{p})
			*p = onHost{h: p.h}
		}
	}
	t.mu.Lock()
	t.prepared[s.Name] = parts
	t.mu.Unlock()
}

// Discard removes the containers Prepare created for a service that is not
// deployed after all.
func (t *Target) Discard(ctx context.Context, service string) {
	t.mu.Lock()
	parts := t.prepared[service]
	delete(t.prepared, service)
	t.mu.Unlock()
	t.dropAhead(ctx, service, parts)
}

// dropAhead removes what Prepare made and the deploy did not use: a
// container created ahead, or started ahead.
func (t *Target) dropAhead(ctx context.Context, service string, parts []*onHost) {
	for _, p := range parts {
		if p.ready != nil {
			if err := p.h.Remove(ctx, p.ready.ID); err != nil {
				t.cfg.Log("%s on %s: %v", service, p.h.Addr(), err)
			}
			p.ready = nil
		}
		if p.warm && p.cur != nil {
			if err := p.h.Remove(ctx, p.cur.ID); err != nil {
				t.cfg.Log("%s on %s: %v", service, p.h.Addr(), err)
			} else {
				t.cfg.Log("%s on %s: removed %s, started ahead", service, p.h.Addr(), p.cur.Name)
			}
			p.cur = nil
		}
		p.warm = false
	}
}

// inventory finds the service's containers on a host: the one with the
// intended configuration, if it runs, and the others. Stopped containers
// with the intended configuration, and duplicates, are removed.
func (t *Target) inventory(ctx context.Context, p *onHost, s target.Service) error {
	if p.known {
		return nil
	}
	if err := t.network(ctx, p.h); err != nil {
		return err
	}
	list, err := p.h.List(ctx, map[string]string{
		target.LabelPipeline:    t.cfg.Pipeline,
		target.LabelEnvironment: t.cfg.Environment,
		target.LabelService:     s.Name,
	})
	if err != nil {
		return err
	}
	// A job of docker-run carries the service's labels; it is none of its
	// containers, and runs on through the deploy.
	list = slices.DeleteFunc(list, func(c container) bool { return target.IsJob(c.Labels) })
	// The labels say a container is the intended one; the engine must say
	// so too.
	var verr error
	inv := sortOut(list, s.Hash, func(c container) string {
		st, err := p.h.State(ctx, c.ID, 0)
		if err != nil {
			verr = err
			return err.Error()
		}
		why := impostor(st, s)
		if why != "" {
			t.cfg.Log("%s on %s: %s is not adopted: %s; it is replaced", s.Name, p.h.Addr(), c.Name, why)
		}
		return why
	})
	if verr != nil {
		return verr
	}
	for _, c := range inv.stale {
		if err := p.h.Remove(ctx, c.ID); err != nil {
			return err
		}
	}
	if p.off && inv.cur != nil {
		inv.old = append([]container{*inv.cur}, inv.old...)
		inv.cur = nil
	}
	p.cur, p.old = inv.cur, inv.old
	p.known = true
	return nil
}

// impostor says why a container whose labels name the intended
// configuration is not what the deploy intends, as the engine reports it:
// another image than the digest, or its environment lacks a variable the
// deploy sets. "" is a container to adopt.
func impostor(st dockerhost.State, s target.Service) string {
	if st.Image != s.Image {
		return fmt.Sprintf("it runs %s, not %s", st.Image, s.Image)
	}
	for _, kv := range s.Env {
		if !slices.Contains(st.Env, kv) {
			name, _, _ := strings.Cut(kv, "=")
			// The value may be a secret: only the name is told.
			return fmt.Sprintf("its variable %s is not the intended one", name)
		}
	}
	return ""
}

// inventory is what a host runs of one service, sorted out.
type inventory struct {
	cur   *container  // running with the intended configuration: adopted once healthy
	stale []container // with the intended configuration, but stopped or a duplicate: removed
	old   []container // any other configuration, or an impostor, newest first: replaced
	more  []container // the intended configuration in other replica slots: kept
}

// sortOut sorts a host's containers of one service (newest first) by the
// adoption rule: the newest running container whose configuration hash is
// the intended one, and that verify finds to be what it claims ("" is no
// objection), is kept; the other containers of that hash go at once, but
// impostors, which may serve, only once the new one does; every other
// container is old, replaced once the new one serves.
//
// With replicas, each slot (LabelReplica; none is slot 1) keeps its own
// newest running container: cur is the first kept, more the others.
func sortOut(list []container, hash string, verify func(container) string) inventory {
	var inv inventory
	kept := map[string]bool{}
	for _, c := range list {
		slot := cmp.Or(c.Labels[LabelReplica], "1")
		switch {
		case c.Labels[target.LabelConfig] != hash:
			inv.old = append(inv.old, c)
		case !c.Running || kept[slot]:
			inv.stale = append(inv.stale, c)
		case verify(c) != "":
			inv.old = append(inv.old, c)
		case inv.cur == nil:
			kept[slot] = true
			c := c
			inv.cur = &c
		default:
			kept[slot] = true
			inv.more = append(inv.more, c)
		}
	}
	return inv
}

// ensureNew makes p.cur a healthy container with the intended
// configuration, named: adopted when one runs already, started otherwise.
func (t *Target) ensureNew(ctx context.Context, p *onHost, s target.Service) error {
	if err := t.ensureHealthy(ctx, p, s); err != nil {
		return err
	}
	return t.name(ctx, p, s)
}

// ensureHealthy makes p.cur a healthy container with the intended
// configuration, adopted or started, not yet named.
func (t *Target) ensureHealthy(ctx context.Context, p *onHost, s target.Service) error {
	if p.cur != nil {
		t.cfg.Log("%s on %s: found %s", s.Name, p.h.Addr(), p.cur.Name)
	} else {
		c, err := t.create(ctx, p, s)
		if err != nil {
			return err
		}
		if err := t.launch(ctx, p, s, c); err != nil {
			return err
		}
	}
	return t.awaitNew(ctx, p, s)
}

// name gives p.cur, healthy, the service's name on the network.
func (t *Target) name(ctx context.Context, p *onHost, s target.Service) error {
	if err := p.h.Alias(ctx, t.cfg.Network, p.cur.ID, s.Name); err != nil {
		return err
	}
	t.cfg.Log("%s on %s: %s answers to %s on %s", s.Name, p.h.Addr(), p.cur.Name, s.Name, t.cfg.Network)
	return nil
}

// create returns the service's new container on p's host, not started:
// the one made ahead, or one made now.
func (t *Target) create(ctx context.Context, p *onHost, s target.Service) (container, error) {
	if c := p.ready; c != nil {
		p.ready = nil
		return *c, nil
	}
	if err := t.pull(ctx, p.h, s.Image); err != nil {
		return container{}, err
	}
	return p.h.Create(ctx, t.spec(s))
}

// launch starts c, a new container of s, as p.cur. A start that fails
// because the host port the engine picked is taken is tried again with a
// container created anew.
func (t *Target) launch(ctx context.Context, p *onHost, s target.Service, c container) error {
	for attempt := 1; ; attempt++ {
		err := t.startNew(ctx, p, s, c)
		if err == nil || !target.PortTaken(err.Error()) || attempt == target.PublishAttempts {
			return err
		}
		t.cfg.Log("%s on %s: the host port the engine picked is held by another process; starting again (attempt %d of %d)", s.Name, p.h.Addr(), attempt+1, target.PublishAttempts)
		if c, err = p.h.Create(ctx, t.spec(s)); err != nil {
			return err
		}
	}
}

// startNew starts a created container as p.cur; one that does not start
// is removed.
func (t *Target) startNew(ctx context.Context, p *onHost, s target.Service, c container) error {
	done, err := t.starts[p.h].take(ctx, s.Rank)
	if err != nil {
		_ = p.h.Remove(context.WithoutCancel(ctx), c.ID)
		return err
	}
	err = p.h.Start(ctx, c)
	done()
	if err != nil {
		_ = p.h.Remove(context.WithoutCancel(ctx), c.ID)
		return err
	}
	c.Running = true
	p.cur = &c
	t.cfg.Log("%s on %s: started %s (%s)", s.Name, p.h.Addr(), c.Name, c.Labels[target.LabelDigest])
	return nil
}

// awaitNew waits for p.cur to be healthy. An unhealthy one is removed.
func (t *Target) awaitNew(ctx context.Context, p *onHost, s target.Service) error {
	addr, err := waitHealthy(ctx, p.h, *p.cur, s.Port(), s.Health())
	if err != nil && t.cfg.IsTransient(err) {
		// Nothing is known of the container: the engine did not answer
		// (its error names the host).
		return err
	}
	if err != nil {
		if rmErr := p.h.Remove(context.WithoutCancel(ctx), p.cur.ID); rmErr != nil {
			err = errors.Join(err, rmErr)
		} else {
			t.cfg.Log("%s on %s: removed unhealthy %s", s.Name, p.h.Addr(), p.cur.Name)
		}
		p.cur = nil
		return stages.Permanent(fmt.Errorf("%s: %w", p.h.Addr(), err))
	}
	p.addr = addr
	t.cfg.Log("%s on %s: %s healthy", s.Name, p.h.Addr(), p.cur.Name)
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

// startFirst deploys one container per host of s start-first; keep are
// the upstreams of the service's other containers, which serve on beside
// the new ones (the other replicas). With settle, retire stops the old
// containers only once every service of the deploy has changed hands
// (target.Config.Settled).
func (t *Target) startFirst(ctx context.Context, s target.Service, parts []*onHost, keep []string, settle bool) (retire func(context.Context) error, err error) {
	err = eachHost(parts, func(p *onHost) error {
		if err := t.inventory(ctx, p, s); err != nil || p.off {
			return err
		}
		return t.ensureNew(ctx, p, s)
	})
	routed := t.cfg.Proxy != nil && t.cfg.Proxy.Routes(s.Name) && s.Port() > 0
	if err != nil {
		return nil, errors.Join(err, t.abandon(context.WithoutCancel(ctx), s, parts, keep))
	}
	t.cfg.At("started", s.Name)

	if routed {
		// The engine may have stopped or restarted the new containers since
		// their health check (a restarted engine publishes their ports
		// anew): check again, right before they get the traffic.
		err := eachHost(parts, func(p *onHost) error {
			if p.off {
				return nil
			}
			addr, err := waitHealthy(ctx, p.h, *p.cur, s.Port(), s.Health())
			if err != nil && !t.cfg.IsTransient(err) {
				return fmt.Errorf("%s: %w", p.h.Addr(), err)
			}
			p.addr = addr
			return err
		})
		if err != nil {
			return nil, errors.Join(err, t.abandon(context.WithoutCancel(ctx), s, parts, keep))
		}
		ups := slices.Clone(keep)
		for _, p := range parts {
			if !p.off {
				ups = append(ups, p.addr)
			}
		}
		// Fencing: the switch is the side effect that matters; only a run
		// that still holds the environment makes it.
		if err := t.cfg.CheckFence(ctx); err != nil {
			return nil, errors.Join(fmt.Errorf("switch %s: %w", s.Name, err), t.abandon(context.WithoutCancel(ctx), s, parts, keep))
		}
		if err := t.cfg.Proxy.Switch(ctx, s.Name, ups); err != nil {
			return nil, err
		}
		t.cfg.At("switched", s.Name)
	}

	anyOld, anyRunning := false, false
	for _, p := range parts {
		anyOld = anyOld || len(p.old) > 0
		anyRunning = anyRunning || slices.ContainsFunc(p.old, func(c container) bool { return c.Running })
	}
	if !anyOld {
		return nil, nil
	}
	return func(ctx context.Context) error {
		// The new containers have the name: the old ones lose it, so that
		// new requests on the network go to the new ones only, while the
		// old ones finish theirs.
		err := eachHost(parts, func(p *onHost) error {
			for _, c := range p.old {
				if !c.Running {
					continue
				}
				if err := p.h.Unalias(ctx, t.cfg.Network, c.ID, s.Name); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if anyRunning {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(t.cfg.Drain):
			}
		}
		if settle {
			if err := t.cfg.WaitSettled(ctx); err != nil {
				return err
			}
		}
		return eachHost(parts, func(p *onHost) error {
			for _, c := range p.old {
				if err := t.retire(ctx, p.h, s.Name, c); err != nil {
					return err
				}
			}
			return nil
		})
	}, nil
}

// retire stops an old container with grace and removes it.
func (t *Target) retire(ctx context.Context, h *dockerhost.Host, service string, c container) error {
	if c.Running {
		if err := h.Stop(ctx, c, t.cfg.StopTimeout); err != nil {
			return err
		}
	}
	if err := h.Remove(ctx, c.ID); err != nil {
		return err
	}
	t.cfg.Log("%s on %s: removed %s", service, h.Addr(), c.Name)
	return nil
}

// abandon undoes a start-first deploy that failed on some host: the proxy
// points at the old containers (a killed earlier attempt may have switched
// it already) and the new containers are removed. When no old container
// runs anywhere, the healthy new ones are all there is and stay.
func (t *Target) abandon(ctx context.Context, s target.Service, parts []*onHost, keep []string) error {
	oldUps := slices.Clone(keep)
	oldRunning := false
	for _, p := range parts {
		i := slices.IndexFunc(p.old, func(c container) bool { return c.Running })
		if i < 0 {
			continue
		}
		oldRunning = true
		// A killed earlier attempt may have taken the name from it.
		if err := p.h.Alias(ctx, t.cfg.Network, p.old[i].ID, s.Name); err != nil {
			return err
		}
		if s.Port() == 0 {
			continue
		}
		st, err := p.h.State(ctx, p.old[i].ID, s.Port())
		if err == nil && st.Running && st.HostPort != "" {
			oldUps = append(oldUps, net.JoinHostPort(p.h.DialIP(), st.HostPort))
		}
	}
	if !oldRunning && len(keep) == 0 {
		return nil
	}
	if t.cfg.Proxy != nil && t.cfg.Proxy.Routes(s.Name) && len(oldUps) > 0 {
		if err := t.cfg.Proxy.Switch(ctx, s.Name, oldUps); err != nil {
			return err
		}
	}
	var errs []error
	for _, p := range parts {
		if p.cur == nil {
			continue
		}
		if err := p.h.Remove(ctx, p.cur.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		t.cfg.Log("%s on %s: removed %s, the old version keeps serving", s.Name, p.h.Addr(), p.cur.Name)
		p.cur = nil
	}
	return errors.Join(errs...)
}

// roll deploys a service with replicas: on every host at once, one
// replica after the other, each start-first (a new container beside an old
// one, healthy, named, in the proxy, then the old one retired), so that
// the others serve throughout. The last old containers are retired by the
// returned retire.
func (t *Target) roll(ctx context.Context, s target.Service, parts []*onHost) (retire func(context.Context) error, err error) {
	n := s.Config.Replicas
	if err := eachHost(parts, func(p *onHost) error { return t.inventory(ctx, p, s) }); err != nil {
		return nil, err
	}
	// What inventory took as the one intended container is any of the
	// slots: sort the intended ones by slot, over again.
	type hostRoll struct {
		cur []*container // by slot - 1
		old []container  // to replace, newest first
	}
	rolls := make([]hostRoll, len(parts))
	for i, p := range parts {
		r := hostRoll{cur: make([]*container, n), old: slices.Clone(p.old)}
		list, err := p.h.List(ctx, map[string]string{
			target.LabelPipeline: t.cfg.Pipeline, target.LabelEnvironment: t.cfg.Environment,
			target.LabelService: s.Name, target.LabelConfig: s.Hash,
		})
		if err != nil {
			return nil, err
		}
		for _, c := range list {
			slot := 1
			fmt.Sscan(c.Labels[LabelReplica], &slot)
			if !c.Running || p.off || slot < 1 || slot > n || r.cur[slot-1] != nil || slices.ContainsFunc(r.old, func(o container) bool { return o.ID == c.ID }) {
				continue // stale ones went in inventory; an impostor is old
			}
			r.cur[slot-1] = &c
		}
		rolls[i] = r
	}
	for slot := 1; slot <= n; slot++ {
		s := s
		s.Labels = maps.Clone(s.Labels)
		s.Labels[LabelReplica] = strconv.Itoa(slot)
		step := make([]*onHost, len(parts))
		var keep []string
		for i, p := range parts {
			r := &rolls[i]
			q := &onHost{h: p.h, known: true, off: p.off, cur: r.cur[slot-1]}
			if slot == n {
				q.old, r.old = r.old, nil
			} else if len(r.old) > 0 {
				q.old, r.old = r.old[len(r.old)-1:], r.old[:len(r.old)-1] // the oldest first
			}
			if q.cur == nil && slot == 1 && p.ready != nil {
				q.ready, p.ready = p.ready, nil
			}
			step[i] = q
			// The other replicas serve on meanwhile, new and old.
			for j, c := range r.cur {
				if j != slot-1 && c != nil {
					keep = append(keep, t.upstream(ctx, p.h, *c, s.Port())...)
				}
			}
			for _, c := range r.old {
				keep = append(keep, t.upstream(ctx, p.h, c, s.Port())...)
			}
		}
		// The replicas go one at a time: each but the last retires its
		// old container before the next starts, and cannot wait for the
		// other services.
		retire, err := t.startFirst(ctx, s, step, keep, slot == n)
		for i, q := range step {
			if q.cur != nil {
				rolls[i].cur[slot-1] = q.cur
			}
		}
		t.dropAhead(context.WithoutCancel(ctx), s.Name, step)
		if err != nil {
			return nil, fmt.Errorf("replica %d of %d: %w", slot, n, err)
		}
		if slot == n {
			return retire, nil
		}
		if retire != nil {
			if err := retire(ctx); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// upstream is where a running container's port is published, for the
// proxy: none when it does not run or publish.
func (t *Target) upstream(ctx context.Context, h *dockerhost.Host, c container, port int) []string {
	if port == 0 || !c.Running {
		return nil
	}
	st, err := h.State(ctx, c.ID, port)
	if err != nil || !st.Running || st.HostPort == "" {
		return nil
	}
	return []string{net.JoinHostPort(h.DialIP(), st.HostPort)}
}

func (t *Target) recreate(ctx context.Context, s target.Service, parts []*onHost) error {
	return eachHost(parts, func(p *onHost) error {
		if err := t.inventory(ctx, p, s); err != nil {
			return err
		}
		if p.off {
			for _, c := range p.old {
				if err := t.retire(ctx, p.h, s.Name, c); err != nil {
					return err
				}
			}
			return nil
		}
		if p.cur != nil {
			// A killed earlier attempt got this far: keep its container if
			// it is healthy, start over otherwise.
			if err := t.ensureNew(ctx, p, s); err == nil {
				for _, c := range p.old {
					if err := t.retire(ctx, p.h, s.Name, c); err != nil {
						return err
					}
				}
				return nil
			}
		}
		// Keep the newest old container to fall back on; the rest go.
		var prev *container
		for i, c := range p.old {
			if i == 0 {
				prev = &p.old[0]
				continue
			}
			if err := t.retire(ctx, p.h, s.Name, c); err != nil {
				return err
			}
		}
		// Pulling and creating are the slow parts: done while the old one
		// still runs.
		nc, err := t.create(ctx, p, s)
		if err != nil {
			return err
		}
		if prev != nil && prev.Running {
			if err := p.h.Stop(ctx, *prev, t.cfg.StopTimeout); err != nil {
				_ = p.h.Remove(context.WithoutCancel(ctx), nc.ID)
				return err
			}
			t.cfg.Log("%s on %s: stopped %s", s.Name, p.h.Addr(), prev.Name)
		}
		err = t.launch(ctx, p, s, nc)
		if err == nil {
			err = t.awaitNew(ctx, p, s)
		}
		if err == nil {
			err = t.name(ctx, p, s)
		}
		if err != nil {
			if prev != nil {
				bg := context.WithoutCancel(ctx)
				if startErr := p.h.Start(bg, *prev); startErr != nil {
					return errors.Join(err, startErr)
				}
				if _, healthErr := waitHealthy(bg, p.h, *prev, s.Port(), s.Health()); healthErr != nil {
					return errors.Join(err, fmt.Errorf("start %s again: %w", prev.Name, healthErr))
				}
				if aliasErr := p.h.Alias(bg, t.cfg.Network, prev.ID, s.Name); aliasErr != nil {
					return errors.Join(err, aliasErr)
				}
				t.cfg.Log("%s on %s: started %s again", s.Name, p.h.Addr(), prev.Name)
			}
			return err
		}
		t.cfg.At("started", s.Name)
		if prev != nil {
			if err := p.h.Remove(ctx, prev.ID); err != nil {
				return err
			}
			t.cfg.Log("%s on %s: removed %s", s.Name, p.h.Addr(), prev.Name)
		}
		return nil
	})
}

var (
	_ target.Target   = (*Target)(nil)
	_ target.Preparer = (*Target)(nil)
)
