package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/caddy"
	"github.com/sweepboard/release/stages/internal/dockerhost"
	"github.com/sweepboard/release/stages/internal/engine"
)

// This file is the deploy stage's side of environments per branch (an
// instance of a template, as dev-login of dev-*): the Caddy addresses
// other servers hold, and taking away what deployments made in an
// environment.

// Listening are the addresses the Caddy at admin serves on, for every
// server but those of environment's services.
func Listening(ctx context.Context, spec *stages.Spec, admin, environment string) ([]string, error) {
	var servers map[string]struct {
		Listen []string `json:"listen"`
	}
	status, err := caddy.New(admin, spec.Timeouts).Do(ctx, http.MethodGet, "/config/apps/http/servers", nil, &servers)
	if err != nil || status != http.StatusOK {
		return nil, err
	}
	own := map[string]bool{}
	for _, svc := range spec.ServiceNames() {
		own[routeID(pipelineName(spec), environment, svc)] = true
	}
	var out []string
	for id, s := range servers {
		if !own[id] {
			out = append(out, s.Listen...)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Removed is what RemoveEnvironment took away: containers and networks
// as "NAME on HOST", Caddy servers by id.
type Removed struct {
	Containers, Networks, Routes []string
}

// RemoveEnvironment takes away every container carrying the labels of
// environment of spec's pipeline on each of its hosts, then its network
// there, then the Caddy server of each service. What is not there is
// fine, so it is safe to redo, and two at once both finish.
func RemoveEnvironment(ctx context.Context, spec *stages.Spec, environment string) (Removed, error) {
	var out Removed
	e, ok := spec.Environments[environment]
	if !ok {
		return out, fmt.Errorf("remove environment %q: no such environment", environment)
	}
	pipe := pipelineName(spec)
	labels := map[string]string{LabelPipeline: pipe, LabelEnvironment: environment}
	var errs []error
	for _, addr := range e.Hosts {
		h, err := dockerhost.Open(addr, engine.Bounds(spec.Timeouts))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cs, err := h.List(ctx, labels)
		if err != nil {
			errs = append(errs, err)
		}
		for _, c := range cs {
			if err := h.Remove(ctx, c.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			out.Containers = append(out.Containers, c.Name+" on "+addr)
		}
		f := filters.NewArgs(filters.Arg("label", LabelPipeline+"="+pipe), filters.Arg("label", LabelEnvironment+"="+environment))
		nets, err := h.Client().NetworkList(ctx, network.ListOptions{Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list networks on %s: %w", addr, err))
		}
		for _, n := range nets {
			if err := h.Client().NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove network %s on %s: %w", n.Name, addr, err))
				continue
			}
			out.Networks = append(out.Networks, n.Name+" on "+addr)
		}
		h.Close()
	}
	if e.Proxy != nil && e.Proxy.Caddy != "" {
		c := caddy.New(e.Proxy.Caddy, spec.Timeouts)
		for _, svc := range spec.ServiceNames() {
			id := routeID(pipe, environment, svc)
			var listen []string
			status, err := c.Do(ctx, http.MethodGet, "/config/apps/http/servers/"+id+"/listen", nil, &listen)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if status != http.StatusOK {
				continue
			}
			if err := c.Remove(ctx, id); err != nil {
				errs = append(errs, err)
				continue
			}
			out.Routes = append(out.Routes, id)
		}
	}
	slices.Sort(out.Containers)
	slices.Sort(out.Networks)
	return out, errors.Join(errs...)
}
