package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// EnvStatus is what an environment runs: its newest recorded deployment and
// each service's container as its host reports it, with the drift between
// the two.
type EnvStatus struct {
	Name       string          `json:"name"`
	Version    string          `json:"version"`
	RunID      string          `json:"runId"`
	DeployedAt *time.Time      `json:"deployedAt"`
	Services   []ServiceStatus `json:"services"`
	// Refs are the refs a branch deployment built, by repo: the
	// environment runs no release then (Version is ""); absent otherwise.
	Refs map[string]string `json:"refs,omitempty"`
	// Commits say which commit of each repo the environment's code is
	// at: the commits its release pinned, or the ones a branch
	// deployment built. Absent when nothing was deployed, or when the
	// release's record pins none.
	Commits map[string]string `json:"commits,omitempty"`
	// Recorded are the digests the newest deployment put there.
	Recorded map[string]string `json:"-"`
	// Template and Listen are an instance's (release env list): the
	// template it was made of and its Caddy listen addresses, by service.
	Template string            `json:"template,omitempty"`
	Listen   map[string]string `json:"listen,omitempty"`
}

// SpecInspector is an Inspector that can inspect an environment of
// another spec than the pipeline's: an instance of a template, which the
// file does not name.
type SpecInspector interface {
	InspectSpec(ctx context.Context, spec *stages.Spec, environment string) ([]Live, error)
}

// ServiceStatus is one service's container in an environment.
type ServiceStatus struct {
	Name    string `json:"name"`
	Host    string `json:"host,omitempty"`
	Digest  string `json:"digest"`
	Healthy bool   `json:"healthy"`
	// Drift says how what runs differs from the record; "" when it agrees.
	Drift string `json:"drift"`
	// Health is what the health check saw, State the container's state.
	Health string `json:"-"`
	State  string `json:"-"`
}

// Drifted reports whether any service drifts from the record or is not
// healthy.
func (s *EnvStatus) Drifted() bool {
	for _, svc := range s.Services {
		if svc.Drift != "" || !svc.Healthy {
			return true
		}
	}
	return false
}

// Status reports what each named environment runs (every environment, in
// promotion order, when names is empty): the record, and, with an
// Inspector, the live containers and their drift from the record.
func (e *Engine) Status(ctx context.Context, names ...string) ([]*EnvStatus, error) {
	p := e.Pipeline
	instances := map[string]*pipeline.Instance{}
	if len(p.Spec.Templates) > 0 {
		list, err := e.Store.Instances(ctx, p.Spec.Name)
		if err != nil {
			return nil, err
		}
		for _, in := range list {
			instances[in.Name] = in
		}
	}
	if len(names) == 0 {
		names = p.Spec.EnvironmentOrder()
		names = append(names, slices.Sorted(maps.Keys(instances))...)
	}
	var out []*EnvStatus
	for _, name := range names {
		spec := p.Spec
		in := instances[name]
		if in != nil {
			spec = p.Spec.WithInstance(name, in.Template, in.Listen)
		}
		env, ok := spec.Environments[name]
		if !ok {
			known := p.Spec.EnvironmentOrder()
			known = append(known, slices.Sorted(maps.Keys(instances))...)
			return nil, usagef("unknown environment %q (known: %s)", name, strings.Join(known, ", "))
		}
		s, err := e.recorded(ctx, name)
		if err != nil {
			return nil, err
		}
		inspect := func(ctx context.Context, name string) ([]Live, error) { return e.Inspector.Inspect(ctx, name) }
		if in != nil {
			s.Template, s.Listen = in.Template, in.Listen
			if si, ok := e.Inspector.(SpecInspector); ok {
				inspect = func(ctx context.Context, name string) ([]Live, error) { return si.InspectSpec(ctx, spec, name) }
			} else {
				inspect = nil
			}
		}
		if e.Inspector != nil && inspect != nil {
			live, err := inspect(ctx, name)
			if err != nil && len(live) == 0 && len(env.Hosts) > 0 {
				return nil, fmt.Errorf("status of %s: %w", name, err)
			}
			s.Services = Compare(s.Recorded, live)
		}
		out = append(out, s)
	}
	return out, nil
}

func (e *Engine) recorded(ctx context.Context, name string) (*EnvStatus, error) {
	s := &EnvStatus{Name: name, Services: []ServiceStatus{}}
	hist, err := e.Store.Deployments(ctx, name, 1)
	if err != nil {
		return nil, err
	}
	if len(hist) > 0 {
		d := hist[0]
		s.Version, s.RunID, s.DeployedAt, s.Recorded = d.Version, d.RunID, &d.At, d.Images
		switch {
		case d.Branch():
			s.Refs, s.Commits = d.Refs, d.Commits
		case d.Version != "":
			rel, err := e.recordedRelease(ctx, d.Version)
			if err != nil {
				return nil, err
			}
			if rel != nil && len(rel.Commits) > 0 {
				s.Commits = rel.Commits
			}
		}
	}
	return s, nil
}

// Compare sets what runs beside what the record says should: a service
// with no container, a container no recorded release put there, or one at
// another digest drifts.
func Compare(recorded map[string]string, live []Live) []ServiceStatus {
	out := []ServiceStatus{}
	for _, l := range live {
		sv := ServiceStatus{Name: l.Service, Host: l.Host, Digest: l.Digest, Healthy: l.Healthy, Health: l.Health, State: l.State}
		switch want := recorded[l.Service]; {
		case l.State == "missing" && want != "":
			sv.Drift = "no container runs; recorded " + want
		case want == "" && l.Digest != "":
			sv.Drift = "runs " + l.Digest + ", which no recorded release put here"
		case want != "" && l.Digest != want:
			sv.Drift = "runs " + l.Digest + ", recorded " + want
		}
		out = append(out, sv)
	}
	return out
}
