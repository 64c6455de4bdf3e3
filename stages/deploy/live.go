package deploy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/sweepboard/release/stages"
)

// Live is one container of an environment as it runs now, or the absence
// of one: a service of the spec with no container on a host has a Live
// with an empty Container.
type Live struct {
	Host      string `json:"host"`
	Service   string `json:"service"`
	Container string `json:"container"` // name; "" when none runs
	ID        string `json:"id"`
	// Digest is the image reference the container runs,
	// "127.0.0.1:5000/sweepboard/api@sha256:…".
	Digest  string `json:"digest"`
	Version string `json:"version"` // the release version that started it
	RunID   string `json:"runId"`
	State   string `json:"state"` // running, exited, …; "missing" without a container
	Healthy bool   `json:"healthy"`
	Health  string `json:"health"` // what the health check saw
}

// Inspect lists, per host of the environment (in the file's order) and per
// service (sorted), the containers a deploy left there and whether they
// answer their health check, probed through their published port on
// 127.0.0.1. For a swarm environment, the services' tasks, through the
// first host. An unreachable host yields one Live per service whose Health
// says why, so the caller can still report the other hosts.
func Inspect(ctx context.Context, spec *stages.Spec, environment string) ([]Live, error) {
	e, ok := spec.Environments[environment]
	if !ok {
		return nil, fmt.Errorf("inspect environment %q: no such environment", environment)
	}
	pipeline := spec.Name
	if pipeline == "" {
		pipeline = "release"
	}
	if e.Swarm {
		if len(e.Hosts) == 0 {
			return nil, fmt.Errorf("inspect environment %q: no hosts", environment)
		}
		return inspectSwarm(ctx, spec, pipeline, environment, e.Hosts[0]), nil
	}
	perHost := make([][]Live, len(e.Hosts))
	var wg sync.WaitGroup
	for i, addr := range e.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perHost[i] = inspectHost(ctx, spec, pipeline, environment, addr)
		}()
	}
	wg.Wait()
	var all []Live
	for _, l := range perHost {
		all = append(all, l...)
	}
	return all, nil
}

func inspectHost(ctx context.Context, spec *stages.Spec, pipeline, environment, addr string) []Live {
	missing := func(health string) []Live {
		var ls []Live
		for _, name := range spec.ServiceNames() {
			ls = append(ls, Live{Host: addr, Service: name, State: "missing", Health: health})
		}
		return ls
	}
	h, err := openHost(addr)
	if err != nil {
		return missing(err.Error())
	}
	defer h.cli.Close()
	boxes, err := h.list(ctx, map[string]string{LabelPipeline: pipeline, LabelEnvironment: environment})
	if err != nil {
		return missing(err.Error())
	}
	seen := map[string]bool{}
	var ls []Live
	for _, b := range boxes {
		name := b.Labels[LabelService]
		seen[name] = true
		svc := spec.Services[name]
		l := Live{
			Host:      addr,
			Service:   name,
			Container: b.Name,
			ID:        b.ID,
			Digest:    b.Labels[LabelDigest],
			Version:   b.Labels[LabelVersion],
			RunID:     b.Labels[LabelRunID],
		}
		if c, err := h.cli.ContainerInspect(ctx, b.ID); err == nil && c.Config != nil {
			l.Digest = c.Config.Image // what it runs, whatever the label says
		}
		st, err := h.state(ctx, b.ID, svc.Port)
		switch {
		case err != nil:
			l.State, l.Health = "unknown", err.Error()
		case !st.Running:
			l.State, l.Health = st.Status, "not running"
		case svc.Port == 0:
			l.State, l.Healthy, l.Health = st.Status, true, "running"
		case st.HostPort == "":
			l.State, l.Health = st.Status, fmt.Sprintf("port %d not published", svc.Port)
		default:
			l.State = st.Status
			l.Healthy, l.Health = probe(ctx, net.JoinHostPort(h.dialIP, st.HostPort), svc.Health)
		}
		ls = append(ls, l)
	}
	for _, name := range spec.ServiceNames() {
		if !seen[name] {
			ls = append(ls, Live{Host: addr, Service: name, State: "missing", Health: "no container"})
		}
	}
	slices.SortStableFunc(ls, func(a, b Live) int { return strings.Compare(a.Service, b.Service) })
	return ls
}
