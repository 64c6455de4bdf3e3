package deploy

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sweepboard/release/stages"
	icaddy "github.com/sweepboard/release/stages/internal/caddy"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Doctor checks the Docker hosts and the Caddy admin APIs of every
// environment. Check names are unique per host and proxy, so the checks of
// several deploy stages can be merged. A Caddy is recognised by its admin
// API's answers (see caddy.Client.Probe), and whether its reloads reset
// connections is only judged once it answered.
func (s *Stage) Doctor(ctx context.Context, spec *stages.Spec) []stages.Check {
	var checks []stages.Check
	seen := map[string]bool{}
	for _, name := range sortedEnvironments(spec) {
		e := spec.Environments[name]
		for _, addr := range e.Hosts {
			if seen["host "+addr] {
				continue
			}
			seen["host "+addr] = true
			checks = append(checks, stages.Check{Name: "docker host " + addr, Run: func(ctx context.Context) error {
				return pingHost(ctx, addr)
			}})
		}
		if e.Proxy == nil || e.Proxy.Caddy == "" || seen["caddy "+e.Proxy.Caddy] {
			continue
		}
		admin := e.Proxy.Caddy
		seen["caddy "+admin] = true
		c := icaddy.New(admin, spec.Timeouts)
		var once sync.Once
		var probeErr error
		probe := func(ctx context.Context) error {
			once.Do(func() { probeErr = c.Probe(ctx) })
			return probeErr
		}
		checks = append(checks,
			stages.Check{Name: "caddy admin " + admin, Run: probe},
			stages.Check{Name: "caddy reloads without resets " + admin, Run: func(ctx context.Context) error {
				if err := probe(ctx); err != nil {
					return fmt.Errorf("not known: Caddy did not answer at %s", admin)
				}
				return icaddy.CheckMigrateReq(admin)
			}},
		)
	}
	return checks
}

// pingHost asks the engine at addr for its version, within ctx.
func pingHost(ctx context.Context, addr string) error {
	cli, err := engine.Connect(addr)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		return fmt.Errorf("ping docker host %s: %w", addr, err)
	}
	return nil
}

func sortedEnvironments(spec *stages.Spec) []string {
	names := make([]string, 0, len(spec.Environments))
	for n := range spec.Environments {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

var _ stages.Doctor = (*Stage)(nil)
