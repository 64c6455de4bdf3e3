// Package target is what the deploy stage acts through: a deploy target
// runs the services of one environment (plain Docker hosts, Swarm; a
// Kubernetes or Nomad target would be one more package), chosen by name
// from a Registry filled from one explicit list.
//
// The stage decides what each service should be (its image by digest, its
// environment, labels, the hash of its configuration) and in which order
// services go; a target makes it so, start-first, and says what runs.
package target

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/engine"
	"github.com/sweepboard/release/stages/internal/registry"
)

// Target runs the services of one environment.
type Target interface {
	// Deploy makes one service run as s says, start-first: the new
	// containers take the traffic only once healthy, and when they do not
	// become healthy the old ones keep serving and Deploy fails with the
	// reason. Once the new containers take the traffic it returns; retire,
	// when not nil, then drains and removes the old ones. Every step is safe
	// to redo: a Deploy cut anywhere converges when called again.
	Deploy(ctx context.Context, s Service) (retire func(context.Context) error, err error)
	// Inspect says what runs, per host and service, for `release status`.
	Inspect(ctx context.Context) []Live
	// Close releases the target's connections.
	Close() error
}

// Preparer is a target that can do part of a service's deploy before the
// services it depends on are up (pull its image, create its containers).
// With warm, the services it depends on serve already (their old
// containers run): its new containers also start and are awaited healthy,
// not yet named or routed, which the deploy does once they are up.
// Prepare is best effort; Discard undoes what it made when the service is
// not deployed after all.
type Preparer interface {
	Prepare(ctx context.Context, s Service, warm bool)
	Discard(ctx context.Context, service string)
}

// Checker is a target that can tell, before a deploy starts, that it
// cannot deploy at all (a swarm host that is not a manager).
type Checker interface {
	Check(ctx context.Context) error
}

// Service is one service as a deploy wants it in the environment.
type Service struct {
	Name   string
	Config stages.ServiceConfig // the file's settings, merged for the environment
	Image  string               // registry/image@sha256:…
	// Env is NAME=VALUE, sorted: the file's env, env_file's and env_from's
	// values (secrets: never logged, never in labels), RELEASE_VERSION and
	// RELEASE_ENVIRONMENT.
	Env         []string
	Labels      map[string]string
	Hash        string // LabelConfig: what makes two containers interchangeable
	StopTimeout time.Duration
	// Rank is the service's place in the deploy's depends_on order,
	// dependencies first. A target whose engine brings containers up one
	// at a time starts the lowest rank waiting first: the services take
	// their names in that order, so the first to be named is the first
	// to be up.
	Rank int
}

// Port is the service's port, 0 when it has none.
func (s Service) Port() int { return s.Config.Service.Port }

// Health is the service's health check.
func (s Service) Health() stages.Health { return s.Config.Service.Health }

// Proxy moves a service's traffic, when the environment has a proxy in
// front of it.
type Proxy interface {
	// Routes says whether the proxy serves the service.
	Routes(service string) bool
	// Switch points the service's route at the upstreams (host:port), all
	// at once.
	Switch(ctx context.Context, service string, upstreams []string) error
}

// Config is what a target is opened with.
type Config struct {
	Spec        *stages.Spec
	Environment string
	Pipeline    string // the spec's name, "release" when it has none
	Hosts       []string
	Network     string // the environment network's name
	Engine      []engine.Option
	Registry    *registry.Client // image pulls; nil for Inspect
	Proxy       Proxy            // nil without one
	// Fence, when set, is checked right before each effect that moves
	// traffic: only a run that still holds the environment makes it.
	Fence       func(context.Context) error
	Logf        func(format string, args ...any)
	Drain       time.Duration // how long old containers live after a switch away
	StopTimeout time.Duration
	// Hook, when set (by a test), is called where a killed deploy leaves
	// the most to clean up: "started" once the new containers of a
	// service are healthy, "switched" once the proxy points at them.
	Hook func(point, service string)
	// Transient says another attempt at what failed with err may succeed.
	Transient func(err error) bool
	// Settled, when set, waits until every service of the deploy under
	// way has taken the traffic or given up: old containers stop after
	// that, so that no container exits while another changes hands.
	Settled func(context.Context) error
}

// Log writes one line of the deploy's log.
func (c *Config) Log(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// At calls the hook at point, when there is one.
func (c *Config) At(point, service string) {
	if c.Hook != nil {
		c.Hook(point, service)
	}
}

// WaitSettled waits for Settled, when there is one.
func (c *Config) WaitSettled(ctx context.Context) error {
	if c.Settled != nil {
		return c.Settled(ctx)
	}
	return nil
}

// CheckFence checks the fence, when there is one.
func (c *Config) CheckFence(ctx context.Context) error {
	if c.Fence != nil {
		return c.Fence(ctx)
	}
	return nil
}

// IsTransient says whether err may pass on another attempt.
func (c *Config) IsTransient(err error) bool { return c.Transient != nil && c.Transient(err) }

// Opener opens a target for an environment.
type Opener func(ctx context.Context, cfg Config) (Target, error)

// Registry is the deploy targets by name.
type Registry map[string]Opener

// Register adds a target; a name given twice is a bug.
func (r Registry) Register(name string, open Opener) {
	if _, dup := r[name]; dup {
		panic(fmt.Sprintf("deploy target %q registered twice", name))
	}
	r[name] = open
}

// Names are the registered targets, sorted.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the target of that name; an unknown one lists the valid
// ones.
func (r Registry) Lookup(name string) (Opener, error) {
	if open, ok := r[name]; ok {
		return open, nil
	}
	return nil, fmt.Errorf("unknown deploy target %q: valid targets are %s", name, strings.Join(r.Names(), ", "))
}

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
	// Config is the configuration hash the container carries (LabelConfig).
	Config string `json:"config,omitempty"`
}

// SortLive orders lives by service, keeping the order of each service's.
func SortLive(ls []Live) {
	slices.SortStableFunc(ls, func(a, b Live) int { return strings.Compare(a.Service, b.Service) })
}
