package docker

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// waitHealthy waits until a new container passes its health check, fails
// it for good (the container exited), or timeout passes. The error carries
// the check's last output. addr is where the container's port is published,
// "" when it has none.
func waitHealthy(ctx context.Context, h *dockerhost.Host, c container, port int, health stages.Health) (addr string, err error) {
	timeout := target.HealthTimeout(health)
	deadline := time.Now().Add(timeout)
	last := "no check ran"
	for {
		st, err := h.State(ctx, c.ID, port)
		if err != nil {
			return "", err
		}
		switch {
		case !st.Running && st.Status != "restarting" && st.Status != "created":
			msg := fmt.Sprintf("container %s %s (exit code %d)", c.Name, st.Status, st.ExitCode)
			if logs := h.Logs(ctx, c.ID); logs != "" {
				msg += ": " + logs
			}
			return "", fmt.Errorf("%s; last health check: %s", msg, last)
		case st.Running:
			ok, out, a := check(ctx, h, c.ID, st, port, health)
			if out != "" {
				last = out
			}
			if ok {
				return a, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("container %s not healthy after %s: %s", c.Name, timeout, last)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// check runs a running container's health check once:
//
//   - http: a GET of the path on the published port, 2xx is healthy;
//   - tcp: a connect to the published port;
//   - exec: the command run in the container, exit 0 is healthy;
//   - none given: the image's HEALTHCHECK as the engine reports it when the
//     image has one, else a connect to the port, else running is healthy.
//
// It returns whether the check passed, what it saw ("" when it could not
// run yet) and where the port is published.
func check(ctx context.Context, h *dockerhost.Host, id string, st dockerhost.State, port int, health stages.Health) (ok bool, out, addr string) {
	if st.HostPort != "" {
		addr = net.JoinHostPort(h.DialIP(), st.HostPort)
	}
	switch kind := health.Kind(); {
	case kind == "exec":
		code, output, err := h.Exec(ctx, id, health.Exec)
		if err != nil {
			return false, err.Error(), addr
		}
		out = fmt.Sprintf("%s: exit code %d", strings.Join(health.Exec, " "), code)
		if output != "" {
			out += ": " + output
		}
		return code == 0, out, addr
	case kind == "" && st.Health != "":
		return st.Health == "healthy", "the image's HEALTHCHECK: " + st.Health, addr
	case port == 0:
		// Nothing to probe: running is all a check can see.
		return true, "running", ""
	case addr == "":
		return false, "", ""
	default:
		ok, out := target.Probe(ctx, addr, health)
		return ok, out, addr
	}
}

// registryOf is the registry part of an image reference, "" when it is
// not one.
func registryOf(ref string) string {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return ""
	}
	return r.Context().RegistryStr()
}
