package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sweepboard/release/stages"
)

// defaultHealthTimeout is how long a new container may take to become
// healthy when the service does not say.
const defaultHealthTimeout = 30 * time.Second

var probeClient = &http.Client{
	Timeout: 2 * time.Second,
	// A health endpoint that redirects is answering: judge its own status.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true},
}

// probe checks a service once at addr (host:port): a GET of its health
// path when it has one, a TCP connect otherwise. It returns whether the
// service is healthy and what the check saw.
func probe(ctx context.Context, addr string, h stages.Health) (bool, string) {
	if h.HTTP == "" {
		var d net.Dialer
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, "connect: " + err.Error()
		}
		c.Close()
		return true, "connect: ok"
	}
	path := h.HTTP
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return false, fmt.Sprintf("GET %s: %v", path, err)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false, fmt.Sprintf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	out := fmt.Sprintf("GET %s: %s", path, resp.Status)
	if b := strings.TrimSpace(string(body)); b != "" {
		out += ": " + b
	}
	return resp.StatusCode >= 200 && resp.StatusCode < 300, out
}

// waitHealthy waits until a new container answers its health check, fails
// it for good (the container exited), or timeout passes. The error carries
// the check's last output.
func waitHealthy(ctx context.Context, h *host, b box, port int, health stages.Health) (addr string, err error) {
	timeout := health.Timeout
	if timeout <= 0 {
		timeout = defaultHealthTimeout
	}
	deadline := time.Now().Add(timeout)
	last := "no check ran"
	for {
		st, err := h.state(ctx, b.ID, port)
		if err != nil {
			return "", err
		}
		switch {
		case !st.Running && st.Status != "restarting" && st.Status != "created":
			msg := fmt.Sprintf("container %s %s (exit code %d)", b.Name, st.Status, st.ExitCode)
			if logs := h.logs(ctx, b.ID); logs != "" {
				msg += ": " + logs
			}
			return "", fmt.Errorf("%s; last health check: %s", msg, last)
		case st.Running && port == 0:
			// Nothing to probe: running is all a check can see.
			return "", nil
		case st.Running && st.HostPort != "":
			addr = net.JoinHostPort(h.dialIP, st.HostPort)
			ok, out := probe(ctx, addr, health)
			last = out
			if ok {
				return addr, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("container %s not healthy after %s: %s", b.Name, timeout, last)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
