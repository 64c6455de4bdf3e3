package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// caddy talks to the admin API of a Caddy server. Each service behind the
// proxy gets its own HTTP server in Caddy's config, named after the
// pipeline, environment and service, whose single route proxies to the
// service's containers. The route's reverse_proxy handler carries an @id,
// so a switch is one PATCH of its upstreams: Caddy applies it live,
// letting requests already proxied finish on the old upstreams.
type caddy struct {
	admin string // e.g. http://127.0.0.1:2019
	hc    *http.Client
}

func newCaddy(admin string) *caddy {
	return &caddy{admin: strings.TrimRight(admin, "/"), hc: &http.Client{Timeout: 30 * time.Second}}
}

type upstream struct {
	Dial string `json:"dial"`
}

// route is where one service is served in Caddy.
type route struct {
	ID     string // server name and handler @id
	Listen string // e.g. 127.0.0.1:8081
}

// server is the Caddy config of a route with the given upstreams. A dial
// that fails (a container gone early) is retried on the other upstreams for
// a while, rather than answered with a 502.
func (r route) server(upstreams []string) map[string]any {
	ups := make([]upstream, len(upstreams))
	for i, u := range upstreams {
		ups[i] = upstream{Dial: u}
	}
	return map[string]any{
		"listen":          []string{r.Listen},
		"automatic_https": map[string]any{"disable": true},
		"routes": []any{map[string]any{
			"handle": []any{map[string]any{
				"@id":       r.ID,
				"handler":   "reverse_proxy",
				"upstreams": ups,
				"load_balancing": map[string]any{
					"try_duration": "5s",
					"try_interval": "100ms",
				},
			}},
		}},
	}
}

// switchTo points a route at the given upstreams, creating its server when
// it is missing or listens elsewhere.
func (c *caddy) switchTo(ctx context.Context, r route, upstreams []string) error {
	var listen []string
	status, err := c.do(ctx, http.MethodGet, "/config/apps/http/servers/"+r.ID+"/listen", nil, &listen)
	if err != nil {
		return err
	}
	if status == http.StatusOK && slices.Equal(listen, []string{r.Listen}) {
		ups := make([]upstream, len(upstreams))
		for i, u := range upstreams {
			ups[i] = upstream{Dial: u}
		}
		status, err = c.do(ctx, http.MethodPatch, "/id/"+r.ID+"/upstreams", ups, nil)
		if err != nil {
			return err
		}
		if status == http.StatusOK {
			return nil
		}
	}
	// PUT creates the parents of the path when they are missing, but only
	// a new key; POST replaces an existing one.
	path := "/config/apps/http/servers/" + r.ID
	status, err = c.do(ctx, http.MethodPut, path, r.server(upstreams), nil)
	if err != nil {
		return err
	}
	if status == http.StatusConflict {
		status, err = c.do(ctx, http.MethodPost, path, r.server(upstreams), nil)
		if err != nil {
			return err
		}
	}
	if status != http.StatusOK {
		return fmt.Errorf("caddy %s %s: status %d", http.MethodPut, path, status)
	}
	return nil
}

// upstreams returns the dial addresses a route proxies to, or nil when the
// route does not exist.
func (c *caddy) upstreams(ctx context.Context, id string) ([]string, error) {
	var ups []upstream
	status, err := c.do(ctx, http.MethodGet, "/id/"+id+"/upstreams", nil, &ups)
	if err != nil || status != http.StatusOK {
		return nil, err
	}
	dials := make([]string, len(ups))
	for i, u := range ups {
		dials[i] = u.Dial
	}
	return dials, nil
}

// remove deletes a route's server; a missing one is fine.
func (c *caddy) remove(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/config/apps/http/servers/"+id, nil, nil)
	return err
}

// do sends one admin request. "Not there" (404, or 400 for a traversal
// into a missing key) and "already there" (409, or 500 for a PUT of an
// existing key) come back as 404 and 409 for the caller to decide; any
// other non-200 is an error carrying Caddy's message.
func (c *caddy) do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("caddy %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.admin+path, body)
	if err != nil {
		return 0, fmt.Errorf("caddy %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("caddy %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("caddy %s %s: %w", method, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		if out != nil && len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
			if err := json.Unmarshal(raw, out); err != nil {
				return 0, fmt.Errorf("caddy %s %s: decode: %w", method, path, err)
			}
		}
		return resp.StatusCode, nil
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusConflict:
		return resp.StatusCode, nil
	case (method == http.MethodGet || method == http.MethodDelete) && isMissingKey(raw):
		return http.StatusNotFound, nil
	case method == http.MethodPut && strings.Contains(string(raw), "key already exists"):
		return http.StatusConflict, nil
	}
	return resp.StatusCode, fmt.Errorf("caddy %s %s: %s", method, path, caddyMessage(resp.StatusCode, raw))
}

func isMissingKey(raw []byte) bool {
	s := string(raw)
	return strings.Contains(s, "invalid traversal path") || strings.Contains(s, "unknown object ID") ||
		strings.Contains(s, "does not exist")
}

func caddyMessage(status int, raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return e.Error
	}
	return fmt.Sprintf("status %d: %s", status, strings.TrimSpace(string(raw)))
}
