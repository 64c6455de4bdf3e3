package docker

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// waitHealthy waits until a new container answers its health check, fails
// it for good (the container exited), or timeout passes. The error carries
// the check's last output.
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
		case st.Running && port == 0:
			// Nothing to probe: running is all a check can see.
			return "", nil
		case st.Running && st.HostPort != "":
			addr = net.JoinHostPort(h.DialIP(), st.HostPort)
			ok, out := target.Probe(ctx, addr, health)
			last = out
			if ok {
				return addr, nil
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

// registryOf is the registry part of an image reference, "" when it is
// not one.
func registryOf(ref string) string {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return ""
	}
	return r.Context().RegistryStr()
}
