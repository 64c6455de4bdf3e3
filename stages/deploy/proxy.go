package deploy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/caddy"
)

// proxy is the environment's Caddy as a target sees it: a service it
// serves (one with a listen address) is switched by its route.
type proxy struct {
	caddy       *caddy.Client
	listen      map[string]string
	pipeline    string
	environment string
	logf        func(format string, args ...any)
}

func newProxy(spec *stages.Spec, environment, pipeline string, logf func(string, ...any)) *proxy {
	px := spec.Environments[environment].Proxy
	return &proxy{
		caddy:       caddy.New(px.Caddy, spec.Timeouts),
		listen:      px.Listen,
		pipeline:    pipeline,
		environment: environment,
		logf:        logf,
	}
}

// Routes says whether the proxy serves the service.
func (p *proxy) Routes(service string) bool { return p.listen[service] != "" }

// Switch points the service's route at the upstreams.
func (p *proxy) Switch(ctx context.Context, service string, ups []string) error {
	r := caddy.Route{ID: routeID(p.pipeline, p.environment, service), Listen: p.listen[service]}
	start := time.Now()
	if err := p.caddy.Switch(ctx, r, ups); err != nil {
		return fmt.Errorf("switch %s to %s: %w", r.Listen, strings.Join(ups, ","), err)
	}
	p.logf("%s: %s now proxies to %s (switch took %s)", service, r.Listen, strings.Join(ups, ", "), time.Since(start).Round(time.Millisecond))
	return nil
}

// routeID names a service's server and handler in Caddy's config.
func routeID(pipeline, environment, service string) string {
	return "release_" + target.Sanitize(pipeline) + "_" + target.Sanitize(environment) + "_" + target.Sanitize(service)
}

var _ target.Proxy = (*proxy)(nil)
