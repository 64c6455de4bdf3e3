package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/engine"
)

// migrateReqPath is the Linux setting that decides what happens to the
// connections queued on a listening socket when it closes while another
// socket of its SO_REUSEPORT group stays open: reset (0) or handed over (1).
// Caddy (2.6 and later) applies every config change, a switch of upstreams
// included, by binding new sockets beside the old ones and closing the old
// ones; with 0, a client connecting at that instant gets a connection reset.
const migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// errMigrateReq explains the setting to a user.
var errMigrateReq = errors.New("net.ipv4.tcp_migrate_req is 0: each Caddy config change may reset a connection " +
	"arriving at that instant; set it to 1 (sysctl -w net.ipv4.tcp_migrate_req=1) on the proxy's machine")

// checkMigrateReq returns errMigrateReq when the Caddy at admin runs on this
// machine and the setting is off. It says nothing about a remote Caddy.
func checkMigrateReq(admin string) error {
	u, err := url.Parse(admin)
	if err != nil {
		return nil
	}
	if h := u.Hostname(); h != "localhost" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
			return nil
		}
	}
	b, err := os.ReadFile(migrateReqPath)
	if err != nil {
		return nil // not Linux, or a kernel before 5.14: nothing to set
	}
	if strings.TrimSpace(string(b)) == "0" {
		return errMigrateReq
	}
	return nil
}

// Doctor checks the Docker hosts and the Caddy admin APIs of every
// environment. Check names are unique per host and proxy, so the checks of
// several deploy stages can be merged. A Caddy is recognised by its admin
// API's answers (see caddy.probe), and whether its reloads reset
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
		c := newCaddyWithin(admin, spec.Timeouts)
		var once sync.Once
		var probeErr error
		probe := func(ctx context.Context) error {
			once.Do(func() { probeErr = c.probe(ctx) })
			return probeErr
		}
		checks = append(checks,
			stages.Check{Name: "caddy admin " + admin, Run: probe},
			stages.Check{Name: "caddy reloads without resets " + admin, Run: func(ctx context.Context) error {
				if err := probe(ctx); err != nil {
					return fmt.Errorf("not known: Caddy did not answer at %s", admin)
				}
				return checkMigrateReq(admin)
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
