package target

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

// DefaultHealthTimeout is how long a new container may take to become
// healthy when the service does not say.
const DefaultHealthTimeout = 30 * time.Second

// HealthTimeout is the service's health timeout, or the default.
func HealthTimeout(h stages.Health) time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return DefaultHealthTimeout
}

var probeClient = &http.Client{
	Timeout: 2 * time.Second,
	// A health endpoint that redirects is answering: judge its own status.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true},
}

// Probe checks a service once at addr (host:port): a GET of its health
// path when it has one, a TCP connect otherwise. It returns whether the
// service is healthy and what the check saw.
func Probe(ctx context.Context, addr string, h stages.Health) (bool, string) {
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
