package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/go-connections/nat"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Labels put on every container a deploy starts. They are how a later deploy
// or `release status` finds the containers of a pipeline's environment.
const (
	LabelPipeline    = "release.pipeline"
	LabelEnvironment = "release.environment"
	LabelService     = "release.service"
	LabelVersion     = "release.version"
	LabelDigest      = "release.digest"
	LabelRunID       = "release.run"
	// LabelConfig is a hash of everything that makes two containers of a
	// service interchangeable: image digest, env, volumes, port.
	LabelConfig = "release.config"
)

// host is one Docker engine of an environment.
type host struct {
	addr string // the engine address from the pipeline file
	cli  *client.Client
	// bindIP is where container ports are published, dialIP where they are
	// reached from this machine (health checks, Caddy upstreams).
	bindIP string
	dialIP string
}

// openHost connects to a Docker engine, negotiating the API version.
func openHost(addr string, opts ...engine.Option) (*host, error) {
	bindIP, dialIP, err := hostIPs(addr)
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
	return &host{addr: addr, cli: cli, bindIP: bindIP, dialIP: dialIP}, nil
}

// hostIPs says where a host's published ports live. A local engine (unix
// socket, or tcp on loopback) publishes on 127.0.0.1 only; a remote one on
// all its interfaces, reached by its name.
func hostIPs(addr string) (bindIP, dialIP string, err error) {
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

// box is a container of one service as a deploy sees it.
type box struct {
	ID      string
	Name    string
	Config  string // LabelConfig
	Labels  map[string]string
	Running bool
	Created time.Time
}

// list returns the containers carrying all the given labels, running or
// not, newest first.
func (h *host) list(ctx context.Context, labels map[string]string) ([]box, error) {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	cs, err := h.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", h.addr, err)
	}
	boxes := make([]box, 0, len(cs))
	for _, c := range cs {
		name := c.ID[:12]
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		boxes = append(boxes, box{
			ID:      c.ID,
			Name:    name,
			Config:  c.Labels[LabelConfig],
			Labels:  c.Labels,
			Running: c.State == "running",
			Created: time.Unix(c.Created, 0),
		})
	}
	slices.SortStableFunc(boxes, func(a, b box) int { return b.Created.Compare(a.Created) })
	return boxes, nil
}

// pull makes sure the image ref (by digest) is on the host. auth is the
// X-Registry-Auth value. Its errors may quote the registry's answer: the
// caller redacts them.
func (h *host) pull(ctx context.Context, ref, auth string) error {
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
	if err := streamError(rc); err != nil {
		return fmt.Errorf("pull %s on %s: %w", ref, h.addr, err)
	}
	return nil
}

// streamError reads a JSON message stream of the engine to its end and
// returns the error it reports, if any.
func streamError(r io.Reader) error {
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

// spec is the container a deploy wants for one service on every host.
type spec struct {
	Name        string
	Image       string
	Env         []string
	Labels      map[string]string
	Port        int
	Volumes     []string
	StopTimeout time.Duration
}

// create creates a container, not started. A stopped container of the
// same name is in the way only after a crash; it is removed first.
func (h *host) create(ctx context.Context, s spec) (box, error) {
	stop := int(s.StopTimeout / time.Second)
	cfg := &container.Config{
		Image:       s.Image,
		Env:         s.Env,
		Labels:      s.Labels,
		StopTimeout: &stop,
	}
	hc := &container.HostConfig{
		Binds:         s.Volumes,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
	}
	if s.Port > 0 {
		p := nat.Port(strconv.Itoa(s.Port) + "/tcp")
		cfg.ExposedPorts = nat.PortSet{p: struct{}{}}
		hc.PortBindings = nat.PortMap{p: {{HostIP: h.bindIP}}}
	}
	resp, err := h.cli.ContainerCreate(ctx, cfg, hc, nil, nil, s.Name)
	if cerrdefs.IsConflict(err) {
		if rmErr := h.remove(ctx, s.Name); rmErr != nil {
			return box{}, rmErr
		}
		resp, err = h.cli.ContainerCreate(ctx, cfg, hc, nil, nil, s.Name)
	}
	if err != nil {
		return box{}, fmt.Errorf("create container %s on %s: %w", s.Name, h.addr, err)
	}
	return box{ID: resp.ID, Name: s.Name, Config: s.Labels[LabelConfig], Labels: s.Labels, Created: time.Now()}, nil
}

// start starts a created or stopped container.
func (h *host) start(ctx context.Context, b box) error {
	if err := h.cli.ContainerStart(ctx, b.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s on %s: %w", b.Name, h.addr, err)
	}
	return nil
}

// stop stops a container, giving its process grace to finish in-flight
// requests after SIGTERM.
func (h *host) stop(ctx context.Context, b box, grace time.Duration) error {
	secs := int(grace / time.Second)
	err := h.cli.ContainerStop(ctx, b.ID, container.StopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s on %s: %w", b.Name, h.addr, err)
	}
	return nil
}

// remove force-removes a container by id or name; a missing one is fine.
func (h *host) remove(ctx context.Context, idOrName string) error {
	err := h.cli.ContainerRemove(ctx, idOrName, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s on %s: %w", idOrName, h.addr, err)
	}
	return nil
}

// state is what a health check needs to know about a running container.
type state struct {
	Running  bool
	ExitCode int
	Status   string
	HostPort string // the published host port of the service port, or ""
}

func (h *host) state(ctx context.Context, id string, port int) (state, error) {
	c, err := h.cli.ContainerInspect(ctx, id)
	if err != nil {
		return state{}, fmt.Errorf("inspect container %s on %s: %w", id, h.addr, err)
	}
	var st state
	if c.State != nil {
		st.Running = c.State.Running && !c.State.Restarting
		st.ExitCode = c.State.ExitCode
		st.Status = c.State.Status
	}
	if port > 0 && c.NetworkSettings != nil {
		for _, b := range c.NetworkSettings.Ports[nat.Port(strconv.Itoa(port)+"/tcp")] {
			if b.HostPort != "" {
				st.HostPort = b.HostPort
				break
			}
		}
	}
	return st, nil
}

// logs returns the last lines a container wrote, for an error message.
func (h *host) logs(ctx context.Context, id string) string {
	rc, err := h.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "5"})
	if err != nil {
		return ""
	}
	defer rc.Close()
	raw, _ := io.ReadAll(io.LimitReader(rc, 4096))
	// The stream is multiplexed: 8-byte frame headers before each chunk.
	var out []byte
	for len(raw) >= 8 {
		n := int(raw[4])<<24 | int(raw[5])<<16 | int(raw[6])<<8 | int(raw[7])
		raw = raw[8:]
		n = min(n, len(raw))
		out = append(out, raw[:n]...)
		raw = raw[n:]
	}
	return strings.TrimSpace(string(out))
}
