// Package dockerhost is the bottom-floor adapter to one Docker engine that
// every Docker stage shares: containers listed by labels, created, started,
// stopped, removed, exec'd into and read from (logs through stdcopy), the
// networks they join, and the engine's own answers (info, image pulls).
// It knows nothing of pipelines: callers pass labels, names and specs.
package dockerhost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/sweepboard/release/stages/internal/engine"
)

// Host is one Docker engine.
type Host struct {
	addr string // the engine address as the pipeline file gives it
	cli  *client.Client
	// bindIP is where container ports are published, dialIP where they are
	// reached from this machine (health checks, proxy upstreams).
	bindIP string
	dialIP string
	// joins keeps joins at an address the engine picks apart from
	// rejoins, which free an address meanwhile (see rejoin).
	joins sync.RWMutex
	// exits keeps stops and removals apart from rejoins, which drop the
	// packets sent to the container meanwhile (see Stop).
	exits apart
}

// apart lets any number of holders of one kind (stops) in at once, and
// of the other kind (rejoins) at once, but never both kinds together. A
// stop also waits until the last rejoin left settle ago: what fell into
// the gap of a rejoin is sent again once the sender's retransmission timer
// fires (200 ms at the least on Linux), and only while the sender lives.
type apart struct {
	mu     sync.Mutex
	cond   *sync.Cond
	count  [2]int
	left   time.Time // when the last rejoin left
	settle time.Duration
}

// settleAfterRejoin is how long after the last rejoin a stop waits: five
// times Linux's least retransmission timeout.
const settleAfterRejoin = time.Second

const (
	exiting   = 0 // a stop or removal
	rejoining = 1
)

// enter waits until no holder of the other kind is in, and comes in as
// one of kind; leave(kind) lets it out.
func (a *apart) enter(kind int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cond == nil {
		a.cond = sync.NewCond(&a.mu)
	}
	for {
		for a.count[1-kind] > 0 {
			a.cond.Wait()
		}
		if kind != exiting {
			break
		}
		wait := a.settle - time.Since(a.left)
		if wait <= 0 {
			break
		}
		a.mu.Unlock()
		time.Sleep(wait)
		a.mu.Lock()
	}
	a.count[kind]++
}

func (a *apart) leave(kind int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.count[kind]--
	if kind == rejoining {
		a.left = time.Now()
	}
	if a.count[kind] == 0 && a.cond != nil {
		a.cond.Broadcast()
	}
}

// Open connects to the Docker engine at addr, negotiating the API version.
func Open(addr string, opts ...engine.Option) (*Host, error) {
	bindIP, dialIP, err := IPs(addr)
	if err != nil {
		return nil, err
	}
	cli, err := engine.Connect(addr, opts...)
	if err != nil {
		return nil, err
	}
	// The client settles the API version on its first request, and that is
	// not safe from two goroutines at once: settle it here, before the
	// services of a deploy go in parallel. An engine that does not answer
	// now is asked again on the next request.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli.NegotiateAPIVersion(ctx)
	return &Host{addr: addr, cli: cli, bindIP: bindIP, dialIP: dialIP, exits: apart{settle: settleAfterRejoin}}, nil
}

// Close closes the connection to the engine.
func (h *Host) Close() error { return h.cli.Close() }

// Addr is the engine address the host was opened with.
func (h *Host) Addr() string { return h.addr }

// DialIP is where the host's published ports are reached from here.
func (h *Host) DialIP() string { return h.dialIP }

// Client is the engine's API client, for what this package does not wrap
// (Swarm services and tasks).
func (h *Host) Client() *client.Client { return h.cli }

// IPs says where a host's published ports live. A local engine (unix
// socket, or tcp on loopback) publishes on 127.0.0.1 only; a remote one on
// all its interfaces, reached by its name.
func IPs(addr string) (bindIP, dialIP string, err error) {
	u, err := url.Parse(addr)
	if err != nil {
		return "", "", fmt.Errorf("parse docker host %q: %w", addr, err)
	}
	switch u.Scheme {
	case "unix", "npipe":
		return "127.0.0.1", "127.0.0.1", nil
	case "tcp", "http", "https", "ssh":
		name := u.Hostname()
		if name == "" {
			return "", "", fmt.Errorf("parse docker host %q: no host name", addr)
		}
		if name == "localhost" {
			return "127.0.0.1", "127.0.0.1", nil
		}
		if ip := net.ParseIP(name); ip != nil && ip.IsLoopback() {
			return "127.0.0.1", "127.0.0.1", nil
		}
		return "0.0.0.0", name, nil
	default:
		return "", "", fmt.Errorf("parse docker host %q: unsupported scheme %q", addr, u.Scheme)
	}
}

// Info is the engine's docker info.
func (h *Host) Info(ctx context.Context) (system.Info, error) {
	info, err := h.cli.Info(ctx)
	if err != nil {
		return info, fmt.Errorf("docker info on %s: %w", h.addr, err)
	}
	return info, nil
}

// Container is one container as a list shows it.
type Container struct {
	ID      string
	Name    string
	Labels  map[string]string
	Running bool
	Created time.Time
}

// List returns the containers carrying all the given labels, running or
// not, newest first.
func (h *Host) List(ctx context.Context, labels map[string]string) ([]Container, error) {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	cs, err := h.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", h.addr, err)
	}
	out := make([]Container, 0, len(cs))
	for _, c := range cs {
		name := c.ID[:12]
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, Container{
			ID:      c.ID,
			Name:    name,
			Labels:  c.Labels,
			Running: c.State == "running",
			Created: time.Unix(c.Created, 0),
		})
	}
	slices.SortStableFunc(out, func(a, b Container) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// Pull makes sure the image ref (by digest) is on the host. auth is the
// X-Registry-Auth value. Its errors may quote the registry's answer: the
// caller redacts them.
func (h *Host) Pull(ctx context.Context, ref, auth string) error {
	if _, err := h.cli.ImageInspect(ctx, ref); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s on %s: %w", ref, h.addr, err)
	}
	rc, err := h.cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pull %s on %s: %w", ref, h.addr, err)
	}
	defer rc.Close()
	if err := StreamError(rc); err != nil {
		return fmt.Errorf("pull %s on %s: %w", ref, h.addr, err)
	}
	return nil
}

// StreamError reads a JSON message stream of the engine to its end and
// returns the error it reports, if any.
func StreamError(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read engine stream: %w", err)
		}
		// As a JSONError, what the engine relays of the registry is judged
		// by engine.Classify like a push's.
		if m.ErrorDetail.Message != "" {
			return &jsonmessage.JSONError{Message: m.ErrorDetail.Message}
		}
		if m.Error != "" {
			return &jsonmessage.JSONError{Message: m.Error}
		}
	}
}

// Spec is a container to create.
type Spec struct {
	Name        string
	Image       string
	Cmd         []string // the image's CMD when empty
	Env         []string
	Labels      map[string]string
	Port        int // the container port, published on an ephemeral host port when > 0
	Publish     string
	Volumes     []string
	StopTimeout time.Duration
	Restart     string // unless-stopped when empty
	Memory      int64
	CPUs        float64
	// Network is joined once created, without aliases: a container gets
	// its DNS name with Alias, once healthy. Its published ports live on
	// the engine's default bridge, so that they stay when it joins the
	// network again with an alias.
	Network string
}

// Create creates a container, not started. A container of the same name
// is in the way only after a crash; it is removed first.
func (h *Host) Create(ctx context.Context, s Spec) (Container, error) {
	stop := int(s.StopTimeout / time.Second)
	cfg := &container.Config{
		Image:       s.Image,
		Cmd:         s.Cmd,
		Env:         s.Env,
		Labels:      s.Labels,
		StopTimeout: &stop,
	}
	restart, err := restartPolicy(s.Restart)
	if err != nil {
		return Container{}, fmt.Errorf("create container %s on %s: %w", s.Name, h.addr, err)
	}
	hc := &container.HostConfig{
		Binds:         s.Volumes,
		RestartPolicy: restart,
		Resources:     container.Resources{Memory: s.Memory, NanoCPUs: int64(s.CPUs * 1e9)},
	}
	if s.Port > 0 {
		p := nat.Port(strconv.Itoa(s.Port) + "/tcp")
		cfg.ExposedPorts = nat.PortSet{p: struct{}{}}
		bind := nat.PortBinding{HostIP: h.bindIP}
		if s.Publish != "" {
			if bind, err = binding(s.Publish); err != nil {
				return Container{}, fmt.Errorf("create container %s on %s: %w", s.Name, h.addr, err)
			}
		}
		hc.PortBindings = nat.PortMap{p: {bind}}
	}
	resp, err := h.cli.ContainerCreate(ctx, cfg, hc, nil, nil, s.Name)
	if cerrdefs.IsConflict(err) {
		if rmErr := h.Remove(ctx, s.Name); rmErr != nil {
			return Container{}, rmErr
		}
		resp, err = h.cli.ContainerCreate(ctx, cfg, hc, nil, nil, s.Name)
	}
	if err != nil {
		return Container{}, fmt.Errorf("create container %s on %s: %w", s.Name, h.addr, err)
	}
	if s.Network != "" {
		// Not started, it gets an address only when it starts: no rejoin
		// is in the way.
		if err := h.join(ctx, s.Network, resp.ID); err != nil {
			_ = h.Remove(context.WithoutCancel(ctx), resp.ID)
			return Container{}, err
		}
	}
	return Container{ID: resp.ID, Name: s.Name, Labels: s.Labels, Created: time.Now()}, nil
}

// binding reads publish: HOST:PORT or PORT.
func binding(publish string) (nat.PortBinding, error) {
	hostIP, port := "", publish
	if i := strings.LastIndex(publish, ":"); i >= 0 {
		hostIP, port = strings.Trim(publish[:i], "[]"), publish[i+1:]
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return nat.PortBinding{}, fmt.Errorf("publish %q: not HOST:PORT or PORT", publish)
	}
	return nat.PortBinding{HostIP: hostIP, HostPort: port}, nil
}

// restartPolicy reads restart: no, always, unless-stopped, on-failure[:N].
func restartPolicy(s string) (container.RestartPolicy, error) {
	name, count, _ := strings.Cut(s, ":")
	p := container.RestartPolicy{Name: container.RestartPolicyMode(name)}
	switch p.Name {
	case "":
		p.Name = container.RestartPolicyUnlessStopped
	case container.RestartPolicyDisabled, container.RestartPolicyAlways, container.RestartPolicyUnlessStopped:
	case container.RestartPolicyOnFailure:
		if count != "" {
			n, err := strconv.Atoi(count)
			if err != nil || n < 0 {
				return p, fmt.Errorf("restart %q: not on-failure:N", s)
			}
			p.MaximumRetryCount = n
		}
	default:
		return p, fmt.Errorf("restart %q: not no, always, unless-stopped or on-failure[:N]", s)
	}
	return p, nil
}

// Start starts a created or stopped container.
func (h *Host) Start(ctx context.Context, c Container) error {
	if err := h.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s on %s: %w", c.Name, h.addr, err)
	}
	return nil
}

// Stop stops a container, giving its process grace to finish in-flight
// requests after SIGTERM. A missing one is fine.
//
// No rejoin is under way meanwhile (see rejoin), while other stops may
// be: a container that exits closes its connections (a FIN, or a reset)
// once, and its network namespace goes with it, so nothing sends them
// again. A peer in the gap of a rejoin would miss them and keep a pooled
// connection that no longer leads anywhere: its next request on it hangs
// until its own deadline. A deploy stops old containers once every
// service changed hands, so that the rejoins do not wait for the stops.
func (h *Host) Stop(ctx context.Context, c Container, grace time.Duration) error {
	h.exits.enter(exiting)
	defer h.exits.leave(exiting)
	secs := int(grace / time.Second)
	err := h.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s on %s: %w", c.Name, h.addr, err)
	}
	return nil
}

// Remove force-removes a container by id or name; a missing one is fine.
// A running one is killed: as with Stop, no rejoin is under way meanwhile.
func (h *Host) Remove(ctx context.Context, idOrName string) error {
	h.exits.enter(exiting)
	defer h.exits.leave(exiting)
	err := h.cli.ContainerRemove(ctx, idOrName, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s on %s: %w", idOrName, h.addr, err)
	}
	return nil
}

// State is what a health check needs to know about a container.
type State struct {
	Running  bool
	ExitCode int
	Status   string
	HostPort string   // the published host port of the service port, or ""
	Image    string   // the image reference it was created from
	Env      []string // NAME=VALUE, the image's and the container's
	// Health is the engine's own health status ("starting", "healthy",
	// "unhealthy") when the image has a HEALTHCHECK, else "".
	Health string
	// Networks are the networks the container is on, each with its aliases.
	Networks map[string][]string
	// IPs are the container's IPv4 addresses, by network.
	IPs map[string]string
}

// State inspects a container; port is the container port whose published
// host port State.HostPort gives.
func (h *Host) State(ctx context.Context, id string, port int) (State, error) {
	c, err := h.cli.ContainerInspect(ctx, id)
	if err != nil {
		return State{}, fmt.Errorf("inspect container %s on %s: %w", id, h.addr, err)
	}
	var st State
	if c.State != nil {
		st.Running = c.State.Running && !c.State.Restarting
		st.ExitCode = c.State.ExitCode
		st.Status = c.State.Status
		if c.State.Health != nil {
			st.Health = c.State.Health.Status
		}
	}
	if c.Config != nil {
		st.Image = c.Config.Image
		st.Env = c.Config.Env
	}
	if c.NetworkSettings != nil {
		if port > 0 {
			for _, b := range c.NetworkSettings.Ports[nat.Port(strconv.Itoa(port)+"/tcp")] {
				if b.HostPort != "" {
					st.HostPort = b.HostPort
					break
				}
			}
		}
		st.Networks = map[string][]string{}
		st.IPs = map[string]string{}
		for name, ep := range c.NetworkSettings.Networks {
			if ep != nil {
				st.Networks[name] = slices.Clone(ep.Aliases)
				st.IPs[name] = ep.IPAddress
			}
		}
	}
	return st, nil
}

// Logs returns the last lines a container wrote, for an error message.
func (h *Host) Logs(ctx context.Context, id string) string {
	rc, err := h.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "5"})
	if err != nil {
		return ""
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 4096))
	return strings.TrimSpace(out.String())
}

// Exec runs argv in a running container, without a shell, and returns its
// exit code and up to 4 KiB of its output.
func (h *Host) Exec(ctx context.Context, id string, argv []string) (code int, output string, err error) {
	ex, err := h.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, "", fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	att, err := h.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, "", fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	defer att.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, io.LimitReader(att.Reader, 4096))
	in, err := h.cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return 0, "", fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	return in.ExitCode, strings.TrimSpace(out.String()), nil
}
