package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
)

// caddy talks to the admin API of a Caddy server. Each service behind the
// proxy gets its own HTTP server in Caddy's config, named after the
// pipeline, environment and service, whose single route proxies to the
// service's containers. The route's reverse_proxy handler carries an @id,
// so a switch is one PATCH of its upstreams: Caddy applies it live,
// letting requests already proxied finish on the old upstreams.
//
// Every admin call is bounded by the pipeline's timeouts (connect, TLS,
// first byte, idle), and one that fails on the way to or from Caddy (a
// refused or cut connection, a silent peer) is tried again under the one
// retry policy: each call is idempotent, a PATCH of upstreams or a PUT of
// a whole server as much as a GET.
type caddy struct {
	admin string // e.g. http://127.0.0.1:2019
	hc    *http.Client
	retry retry.Policy
}

// newCaddy is the client of the admin API at admin with the default
// timeouts.
func newCaddy(admin string) *caddy { return newCaddyWithin(admin, deadline.Deadlines{}) }

// newCaddyWithin is the client of the admin API at admin with the
// pipeline file's timeouts.
func newCaddyWithin(admin string, timeouts deadline.Deadlines) *caddy {
	return &caddy{
		admin: strings.TrimRight(admin, "/"),
		hc:    timeouts.Client(),
		retry: retry.Policy{Attempts: 3, Backoff: 250 * time.Millisecond, MaxBackoff: 2 * time.Second},
	}
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
	var payload []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("caddy %s %s: %w", method, path, err)
		}
		payload = b
	}
	status, raw, err := c.send(ctx, method, path, payload)
	if err != nil {
		return 0, err
	}
	switch {
	case status == http.StatusOK:
		if out != nil && len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
			if err := json.Unmarshal(raw, out); err != nil {
				return 0, fmt.Errorf("caddy %s %s: decode: %w", method, path, err)
			}
		}
		return status, nil
	case status == http.StatusNotFound, status == http.StatusConflict:
		return status, nil
	case (method == http.MethodGet || method == http.MethodDelete) && isMissingKey(raw):
		return http.StatusNotFound, nil
	case method == http.MethodPut && strings.Contains(string(raw), "key already exists"):
		return http.StatusConflict, nil
	}
	return status, fmt.Errorf("caddy %s %s: %s", method, path, caddyMessage(status, raw))
}

// send makes one admin call, again after a failure on the way, and returns
// Caddy's status and up to 1 MiB of its answer. Any answer is final here:
// Caddy's own errors (a bad config) do not change with a retry.
func (c *caddy) send(ctx context.Context, method, path string, payload []byte) (status int, raw []byte, err error) {
	err = c.retry.Do(ctx, "caddy "+method+" "+path, func(ctx context.Context) error {
		var body io.Reader
		if payload != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.admin+path, body)
		if err != nil {
			return err
		}
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return err
		}
		status = resp.StatusCode
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("caddy %s %s: %w", method, path, err)
	}
	return status, raw, nil
}

// probe tells Caddy's admin API from any other server that answers HTTP:
// GET /config/ answers 200 with JSON, and GET /reverse_proxy/upstreams,
// which only Caddy's reverse_proxy module serves, a JSON array. It is one
// attempt each: doctor reports what it finds.
func (c *caddy) probe(ctx context.Context) error {
	once := *c
	once.retry.Attempts = 1
	for _, p := range []struct {
		path string
		ok   func(raw []byte) bool
		want string
	}{
		{"/config/", func(raw []byte) bool { return json.Valid(raw) }, "JSON"},
		{"/reverse_proxy/upstreams", func(raw []byte) bool {
			var ups []json.RawMessage
			return json.Unmarshal(raw, &ups) == nil
		}, "a JSON array"},
	} {
		status, raw, err := once.send(ctx, http.MethodGet, p.path, nil)
		switch {
		case err != nil:
			return fmt.Errorf("%w: %w", errNoAnswer, err)
		case status != http.StatusOK:
			return fmt.Errorf("%s answers but is not Caddy's admin API: %d %s to GET %s", c.admin, status, http.StatusText(status), p.path)
		case !p.ok(raw):
			return fmt.Errorf("%s answers but is not Caddy's admin API: GET %s answers %s, not %s", c.admin, p.path, quoteStart(raw), p.want)
		}
	}
	return nil
}

// errNoAnswer is a peer that did not answer at all.
var errNoAnswer = errors.New("no answer")

// quoteStart quotes the start of a peer's answer for a message.
func quoteStart(raw []byte) string {
	if len(raw) > 40 {
		return fmt.Sprintf("%q…", raw[:40])
	}
	return fmt.Sprintf("%q", raw)
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
