// Package swarm is the deploy target "swarm": each service of an
// environment runs as a Docker Swarm service, named like the containers
// without the config hash (pipeline-environment-service), through the
// engine API of the environment's first host, a swarm manager:
//
//   - The service is created when missing, otherwise updated to the new
//     digest with a rolling update: one task at a time, start-first, the
//     image's HEALTHCHECK (with timings from the service's health) as the
//     monitor, and an automatic rollback when the new task fails.
//   - The port is published in host mode on a port the engine picks: a
//     fixed host-mode port cannot be held by the old and the new task at
//     once, and the ingress routing mesh needs the engine's iptables rules.
//   - With a proxy, the proxy sends traffic to the tasks: the deploy watches
//     the update, probes each new task itself and switches the proxy to it
//     as soon as it answers, before the engine's own health check (every
//     second) lets swarm stop the old task.
package swarm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// Name is the target's name in the pipeline file.
const Name = "swarm"

// Target deploys Swarm services through a manager.
type Target struct {
	cfg     target.Config
	manager *dockerhost.Host

	mu        sync.Mutex
	networkUp bool
}

// Open connects to the environment's first host and checks that it is a
// swarm manager.
func Open(ctx context.Context, cfg target.Config) (target.Target, error) {
	if len(cfg.Hosts) == 0 {
		return nil, fmt.Errorf("swarm environment %s: no hosts", cfg.Environment)
	}
	h, err := dockerhost.Open(cfg.Hosts[0], cfg.Engine...)
	if err != nil {
		return nil, err
	}
	return &Target{cfg: cfg, manager: h}, nil
}

// network makes sure the environment's overlay network exists, once per
// deploy.
func (t *Target) network(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.networkUp {
		return nil
	}
	labels := map[string]string{target.LabelPipeline: t.cfg.Pipeline, target.LabelEnvironment: t.cfg.Environment}
	if _, err := t.manager.EnsureNetwork(ctx, t.cfg.Network, dockerhost.Overlay, labels); err != nil {
		return stages.Permanent(err)
	}
	t.networkUp = true
	return nil
}

// healthTest is the command swarm checks a task with: health exec: when
// the file gives one, else the image's HEALTHCHECK (nil).
func healthTest(h stages.Health) []string {
	if h.Kind() != "exec" {
		return nil
	}
	return append([]string{"CMD"}, h.Exec...)
}

// restartPolicy is a service's restart: as swarm says it.
func restartPolicy(restart string) *swarm.RestartPolicy {
	name, count, _ := strings.Cut(restart, ":")
	p := &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny}
	switch name {
	case "no":
		p.Condition = swarm.RestartPolicyConditionNone
	case "on-failure":
		p.Condition = swarm.RestartPolicyConditionOnFailure
		if n, err := strconv.ParseUint(count, 10, 64); err == nil {
			p.MaxAttempts = &n
		}
	}
	return p
}

// Close closes the connection to the manager.
func (t *Target) Close() error { return t.manager.Close() }

// Timings of the health check swarm runs in a service's tasks. The check
// is a process exec'd in the container; on a busy host that alone can take
// seconds, and a check that times out three times has swarm kill a task
// that serves well, so the timeout is generous.
const (
	swarmHealthInterval = time.Second
	swarmHealthTimeout  = 5 * time.Second
	swarmHealthRetries  = 3
)

// ServiceName is a service's name in the swarm.
func ServiceName(pipeline, environment, service string) string {
	return target.Sanitize(pipeline) + "-" + target.Sanitize(environment) + "-" + target.Sanitize(service)
}

// swarmSpec is the Swarm service spec of a service in this environment.
func (t *Target) swarmSpec(w target.Service) swarm.ServiceSpec {
	start := target.HealthTimeout(w.Health())
	grace := w.StopTimeout
	replicas := uint64(max(w.Config.Replicas, 1))
	var mounts []mount.Mount
	for _, v := range w.Config.Service.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		m := mount.Mount{Type: mount.TypeBind, Source: parts[0], Target: parts[1]}
		if len(parts) > 2 && strings.Contains(parts[2], "ro") {
			m.ReadOnly = true
		}
		mounts = append(mounts, m)
	}
	s := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: ServiceName(t.cfg.Pipeline, t.cfg.Environment, w.Name), Labels: w.Labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:  w.Image,
				Env:    w.Env,
				Labels: w.Labels,
				Mounts: mounts,
				// The image's HEALTHCHECK command (or health exec:), checked
				// every second: swarm holds a task "starting" until it
				// passes, and fails it after three misses once start has
				// passed.
				Healthcheck: &container.HealthConfig{
					Test:        healthTest(w.Health()),
					Interval:    swarmHealthInterval,
					Timeout:     swarmHealthTimeout,
					Retries:     swarmHealthRetries,
					StartPeriod: start,
				},
				StopGracePeriod: &grace,
			},
			RestartPolicy: restartPolicy(w.Config.Restart),
			Resources: &swarm.ResourceRequirements{Limits: &swarm.Limit{
				MemoryBytes: w.Config.Memory,
				NanoCPUs:    int64(w.Config.CPUs * 1e9),
			}},
			// On the environment's overlay network the service answers to
			// its name; swarm's virtual IP sends requests only to tasks
			// that run, healthy.
			Networks: []swarm.NetworkAttachmentConfig{{Target: t.cfg.Network, Aliases: []string{w.Name}}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig: &swarm.UpdateConfig{
			Parallelism:   1,
			Order:         swarm.UpdateOrderStartFirst,
			FailureAction: swarm.UpdateFailureActionRollback,
			// A task is watched this long after it runs (healthy) for a
			// failure that rolls the update back.
			Monitor:         time.Duration(swarmHealthRetries+2) * swarmHealthInterval,
			MaxFailureRatio: 0,
		},
		RollbackConfig: &swarm.UpdateConfig{
			Parallelism:   1,
			Order:         swarm.UpdateOrderStartFirst,
			FailureAction: swarm.UpdateFailureActionPause,
			Monitor:       time.Duration(swarmHealthRetries+2) * swarmHealthInterval,
		},
	}
	// The service's name on the overlay resolves to its tasks' addresses
	// (DNS round robin), not to a virtual IP: the virtual IP needs the
	// engine's iptables and IPVS rules, which an engine run without them
	// lacks, and DNS answers only with tasks that run (healthy, with a
	// health check).
	s.EndpointSpec = &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR}
	if w.Port() > 0 {
		s.EndpointSpec.Ports = []swarm.PortConfig{{
			Protocol:    swarm.PortConfigProtocolTCP,
			TargetPort:  uint32(w.Port()),
			PublishMode: swarm.PortConfigPublishModeHost,
		}}
	}
	return s
}

// swarmService deploys one service as a Swarm service and waits until its
// update completed, or rolled back.
func (t *Target) Deploy(ctx context.Context, w target.Service) (retire func(context.Context) error, err error) {
	return nil, t.deploy(ctx, w)
}

func (t *Target) deploy(ctx context.Context, w target.Service) error {
	h := t.manager
	name := w.Name
	want := t.swarmSpec(w)
	auth, err := t.cfg.Registry.EngineAuth(ctx, w.Image)
	if err != nil {
		return stages.Permanent(err)
	}
	routed := t.cfg.Proxy != nil && t.cfg.Proxy.Routes(name) && w.Port() > 0
	if err := t.network(ctx); err != nil {
		return err
	}

	began := time.Now()
	for attempt := 1; ; attempt++ {
		err := t.deployOnce(ctx, h, w, want, auth, routed)
		if err == nil {
			t.cfg.Log("%s: swarm service %s runs %s (took %s)", name, want.Name, w.Image, time.Since(began).Round(time.Millisecond))
			return nil
		}
		// A new task that could not bind the host port the engine picked
		// (another engine's container holds it) rolled the update back:
		// the next update's task gets another port.
		if !target.PortTaken(err.Error()) || attempt == target.PublishAttempts || ctx.Err() != nil {
			return err
		}
		t.cfg.Log("%s: %v; updating again (attempt %d of %d)", name, err, attempt+1, target.PublishAttempts)
	}
}

// deployOnce creates or updates the service once and follows the update.
func (t *Target) deployOnce(ctx context.Context, h *dockerhost.Host, w target.Service, want swarm.ServiceSpec, auth string, routed bool) error {
	name := w.Name
	cur, err := findService(ctx, h, want.Name)
	if err != nil {
		return err
	}
	switch {
	case cur == nil:
		if err := t.cfg.CheckFence(ctx); err != nil {
			return fmt.Errorf("create service %s: %w", want.Name, err)
		}
		resp, err := h.Client().ServiceCreate(ctx, want, swarm.ServiceCreateOptions{EncodedRegistryAuth: auth})
		if err != nil {
			return fmt.Errorf("create service %s on %s: %w", want.Name, h.Addr(), err)
		}
		t.cfg.Log("%s: created swarm service %s (%s)", name, want.Name, w.Image)
		cur = &swarm.Service{ID: resp.ID}
	case cur.Spec.Labels[target.LabelConfig] == w.Hash && !rolledBack(cur):
		t.cfg.Log("%s: found swarm service %s at %s", name, want.Name, w.Image)
	default:
		if err := t.cfg.CheckFence(ctx); err != nil {
			return fmt.Errorf("update service %s: %w", want.Name, err)
		}
		if _, err := h.Client().ServiceUpdate(ctx, cur.ID, cur.Version, want, swarm.ServiceUpdateOptions{EncodedRegistryAuth: auth}); err != nil {
			return fmt.Errorf("update service %s on %s: %w", want.Name, h.Addr(), err)
		}
		t.cfg.Log("%s: updating swarm service %s to %s (start-first)", name, want.Name, w.Image)
	}
	if err := t.await(ctx, h, name, cur.ID, w.Image, w.Config.Service, max(w.Config.Replicas, 1), routed); err != nil {
		return stages.Permanent(err)
	}
	return nil
}

// rolledBack says a service's last update was rolled back: its spec is
// the previous one again, and the config label says so too, but a deploy
// must try the update again rather than adopt it.
func rolledBack(s *swarm.Service) bool {
	return s.UpdateStatus != nil && strings.HasPrefix(string(s.UpdateStatus.State), "rollback")
}

// findService returns the swarm service of that name, or nil.
func findService(ctx context.Context, h *dockerhost.Host, name string) (*swarm.Service, error) {
	list, err := h.Client().ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return nil, fmt.Errorf("list swarm services on %s: %w", h.Addr(), err)
	}
	for _, s := range list {
		if s.Spec.Name == name {
			return &s, nil
		}
	}
	return nil, nil
}

// awaitSwarm follows a service's update until a task of image runs, healthy,
// and no other task does; with a proxy, it keeps the route pointed at the
// tasks it found healthy itself. A rollback, or a timeout, is an error
// carrying the failed task's reason.
func (t *Target) await(ctx context.Context, h *dockerhost.Host, name, id, image string, svc stages.Service, replicas int, proxied bool) error {
	timeout := target.HealthTimeout(svc.Health)
	// Room for the start period, the checks, the monitor and a rollback.
	deadline := time.Now().Add(2*timeout + 30*time.Second)
	var routed []string
	why := ""       // swarm's message when it began the rollback
	lastCheck := "" // the last failed health check of a new task
	for {
		s, _, err := h.Client().ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect service %s on %s: %w", id, h.Addr(), err)
		}
		tasks, err := serviceTasks(ctx, h, id)
		if err != nil {
			return err
		}
		ups, failed := t.healthyTasks(ctx, h, tasks, image, svc)
		// A check the service answered (a 503 and its body) says more
		// than a refused or reset connection while the task stops.
		if failed != "" && (lastCheck == "" || !strings.Contains(failed, `Get "`)) {
			lastCheck = failed
		}
		if proxied {
			if len(ups) > 0 && !slices.Equal(ups, routed) {
				if err := t.switchTo(ctx, name, ups); err != nil {
					return err
				}
				routed = ups
			}
		}
		state := ""
		if s.UpdateStatus != nil {
			state = string(s.UpdateStatus.State)
		}
		switch state {
		case string(swarm.UpdateStateRollbackStarted), string(swarm.UpdateStateRollbackCompleted),
			string(swarm.UpdateStateRollbackPaused), string(swarm.UpdateStatePaused):
			if state == string(swarm.UpdateStateRollbackStarted) {
				why = s.UpdateStatus.Message
				break // wait for the old task to serve again
			}
			// Swarm may say the rollback completed before a task of the
			// previous image runs healthy again; the deploy reports only
			// once one does (or at the deadline), so the previous version
			// serves when the error is seen.
			prev := s.Spec.TaskTemplate.ContainerSpec.Image
			old, _ := t.healthyTasks(ctx, h, tasks, prev, svc)
			back := len(old) > 0 && settled(tasks, prev, 1)
			if proxied && len(old) > 0 && !slices.Equal(old, routed) {
				// The old tasks serve again: route to them.
				if err := t.switchTo(context.WithoutCancel(ctx), name, old); err != nil {
					return err
				}
				routed = old
			}
			if back || time.Now().After(deadline) {
				reason := failedReason(tasks, image, cmp.Or(why, s.UpdateStatus.Message))
				if lastCheck != "" {
					reason += "; last health check of the new task: " + lastCheck
				}
				if !back {
					reason += "; no healthy task of the previous image " + prev + " yet"
				}
				return fmt.Errorf("swarm service %s: update to %s %s: %s", s.Spec.Name, image, strings.ReplaceAll(state, "_", " "), reason)
			}
		}
		if (state == "" || state == string(swarm.UpdateStateCompleted)) && settled(tasks, image, replicas) {
			return nil
		}
		if state == "" {
			// A new service has no update status: a task that failed is
			// retried by swarm forever; give up at the health timeout.
			// A task whose port was taken is not the image's fault: swarm's
			// next task gets another port, so wait for it until the deadline.
			reason := failedReason(tasks, image, "")
			if reason != "" && !target.PortTaken(reason) && time.Now().After(deadline.Add(-timeout-30*time.Second)) {
				return fmt.Errorf("swarm service %s: %s not healthy after %s: %s", s.Spec.Name, image, timeout, reason)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("swarm service %s: update to %s not done after %s: %s", s.Spec.Name, image, time.Since(deadline.Add(-2*timeout-30*time.Second)).Round(time.Second), failedReason(tasks, image, "still "+state))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// switchTo points the service's route at the given tasks, fenced.
func (t *Target) switchTo(ctx context.Context, name string, ups []string) error {
	if err := t.cfg.CheckFence(ctx); err != nil {
		return fmt.Errorf("switch %s: %w", name, err)
	}
	return t.cfg.Proxy.Switch(ctx, name, ups)
}

// serviceTasks lists a service's tasks that swarm wants running.
func serviceTasks(ctx context.Context, h *dockerhost.Host, id string) ([]swarm.Task, error) {
	tasks, err := h.Client().TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", id))})
	if err != nil {
		return nil, fmt.Errorf("list tasks of service %s on %s: %w", id, h.Addr(), err)
	}
	slices.SortStableFunc(tasks, func(a, b swarm.Task) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return tasks, nil
}

// settled says at least replicas tasks of image run and no task of
// another image is wanted running or still running.
func settled(tasks []swarm.Task, image string, replicas int) bool {
	n := 0
	for _, t := range tasks {
		live := t.Status.State == swarm.TaskStateRunning || t.Status.State == swarm.TaskStateStarting
		switch {
		case t.Spec.ContainerSpec.Image == image && t.DesiredState == swarm.TaskStateRunning && t.Status.State == swarm.TaskStateRunning:
			n++
		case t.Spec.ContainerSpec.Image != image && (t.DesiredState == swarm.TaskStateRunning || live):
			return false
		}
	}
	return n >= max(replicas, 1)
}

// failedReason is why the newest failed task of image failed, as swarm
// says it, or fallback.
func failedReason(tasks []swarm.Task, image, fallback string) string {
	// A task swarm failed (unhealthy, exited) says why in Err; one it shut
	// down in a rollback only says "finished".
	for _, failed := range []bool{true, false} {
		for _, t := range tasks {
			if t.Spec.ContainerSpec.Image != image || t.Status.Err == "" {
				continue
			}
			if failed && t.Status.State != swarm.TaskStateFailed && t.Status.State != swarm.TaskStateRejected {
				continue
			}
			return fmt.Sprintf("task %s %s: %s", t.ID[:12], t.Status.State, t.Status.Err)
		}
	}
	return fallback
}

// taskAddr is where a task's published port is reached from here, or "".
func taskAddr(h *dockerhost.Host, t swarm.Task, port int) string {
	for _, p := range t.Status.PortStatus.Ports {
		if int(p.TargetPort) == port && p.PublishedPort != 0 {
			return net.JoinHostPort(h.DialIP(), strconv.Itoa(int(p.PublishedPort)))
		}
	}
	return ""
}

// healthyTasks returns the addresses of the running or starting tasks of
// image that answer their health check now, sorted, and what the last
// failed check saw.
func (t *Target) healthyTasks(ctx context.Context, h *dockerhost.Host, tasks []swarm.Task, image string, svc stages.Service) (ups []string, failed string) {
	for _, task := range tasks {
		if task.Spec.ContainerSpec.Image != image || task.DesiredState != swarm.TaskStateRunning {
			continue
		}
		if task.Status.State != swarm.TaskStateRunning && task.Status.State != swarm.TaskStateStarting {
			continue
		}
		addr := taskAddr(h, task, svc.Port)
		if addr == "" && task.Status.ContainerStatus != nil && task.Status.ContainerStatus.ContainerID != "" {
			// Swarm reports a task's ports once it runs, that is once
			// healthy; a starting task on this host is found by its
			// container.
			if st, err := h.State(ctx, task.Status.ContainerStatus.ContainerID, svc.Port); err == nil && st.HostPort != "" {
				addr = net.JoinHostPort(h.DialIP(), st.HostPort)
			}
		}
		if addr == "" {
			continue
		}
		if ok, out := target.Probe(ctx, addr, svc.Health); ok {
			ups = append(ups, addr)
		} else {
			failed = out
		}
	}
	slices.Sort(ups)
	return ups, failed
}

// Live is what runs of a service.
type Live = target.Live

// Inspect lists the tasks swarm wants running, per service, probed through
// their published port.
func (t *Target) Inspect(ctx context.Context) []Live {
	h, spec, addr := t.manager, t.cfg.Spec, t.manager.Addr()
	missing := func(service, health string) Live {
		return Live{Host: addr, Service: service, State: "missing", Health: health}
	}
	var ls []Live
	for _, name := range spec.ServiceNames() {
		svc := spec.Services[name]
		s, err := findService(ctx, h, ServiceName(t.cfg.Pipeline, t.cfg.Environment, name))
		if err != nil || s == nil {
			msg := "no swarm service"
			if err != nil {
				msg = err.Error()
			}
			ls = append(ls, missing(name, msg))
			continue
		}
		tasks, err := serviceTasks(ctx, h, s.ID)
		if err != nil {
			ls = append(ls, missing(name, err.Error()))
			continue
		}
		found := false
		for _, task := range tasks {
			if task.DesiredState != swarm.TaskStateRunning {
				continue
			}
			found = true
			labels := task.Spec.ContainerSpec.Labels
			l := Live{
				Host:      addr,
				Service:   name,
				Container: fmt.Sprintf("%s.%d", s.Spec.Name, task.Slot),
				ID:        task.ID,
				Digest:    task.Spec.ContainerSpec.Image,
				Version:   labels[target.LabelVersion],
				RunID:     labels[target.LabelRunID],
				Config:    labels[target.LabelConfig],
				State:     string(task.Status.State),
			}
			switch {
			case task.Status.State != swarm.TaskStateRunning:
				l.Health = task.Status.Message
				if task.Status.Err != "" {
					l.Health = task.Status.Err
				}
			case svc.Port == 0:
				l.Healthy, l.Health = true, "running"
			default:
				if a := taskAddr(h, task, svc.Port); a != "" {
					l.Healthy, l.Health = target.Probe(ctx, a, svc.Health)
				} else {
					l.Health = fmt.Sprintf("port %d not published", svc.Port)
				}
			}
			ls = append(ls, l)
		}
		if !found {
			ls = append(ls, missing(name, "no task"))
		}
	}
	return ls
}

// ErrNoManager is a swarm environment's first host that is not a swarm
// manager.
var ErrNoManager = errors.New("not a swarm manager")

// CheckManager makes sure a host is a swarm manager.
func CheckManager(ctx context.Context, h *dockerhost.Host) error {
	info, err := h.Info(ctx)
	if err != nil {
		return err
	}
	if !info.Swarm.ControlAvailable {
		return fmt.Errorf("swarm environment on %s (swarm state %q): %w", h.Addr(), info.Swarm.LocalNodeState, ErrNoManager)
	}
	return nil
}

var _ target.Target = (*Target)(nil)

// Check makes sure the manager is one, before a deploy starts.
func (t *Target) Check(ctx context.Context) error { return CheckManager(ctx, t.manager) }

var _ target.Checker = (*Target)(nil)
