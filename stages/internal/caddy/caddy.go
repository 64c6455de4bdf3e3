// Package caddy is the bottom-floor client of a Caddy server's admin API:
// the one reverse proxy the deploy stage switches traffic with. Each service
// behind the proxy gets its own HTTP server in Caddy's config, named after
// the pipeline, environment and service, whose single route proxies to the
// service's containers. The route's reverse_proxy handler carries an @id,
// so a switch is one PATCH of its upstreams: Caddy applies it live,
// letting requests already proxied finish on the old upstreams.
package caddy

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

// Client talks to the admin API of a Caddy server.
//
// Every admin call is bounded by the pipeline's timeouts (connect, TLS,
// first byte, idle), and one that fails on the way to or from Caddy (a
// refused or cut connection, a silent peer) is tried again under the one
// retry policy: each call is idempotent, a PATCH of upstreams or a PUT of
// a whole server as much as a GET.
type Client struct {
	admin string // e.g. http://127.0.0.1:2019
	hc    *http.Client
	retry retry.Policy
}

// New is the client of the admin API at admin (e.g. http://127.0.0.1:2019)
// with the pipeline file's timeouts; the zero Deadlines are the defaults.
func New(admin string, timeouts deadline.Deadlines) *Client {
	return &Client{
		admin: strings.TrimRight(admin, "/"),
		hc:    timeouts.Client(),
		retry: retry.Policy{Attempts: 3, Backoff: 250 * time.Millisecond, MaxBackoff: 2 * time.Second},
	}
}

type upstream struct {
	Dial string `json:"dial"`
}

// Route is where one service is served in Caddy.
type Route struct {
	ID     string // server name and handler @id
	Listen string // e.g. 127.0.0.1:8081
}

// Server is the Caddy config of a route with the given upstreams. A dial
// that fails (a container gone early) is retried on the other upstreams for
// a while, rather than answered with a 502.
func (r Route) Server(upstreams []string) map[string]any {
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

// Switch points a route at the given upstreams, creating its server when
// it is missing or listens elsewhere.
func (c *Client) Switch(ctx context.Context, r Route, upstreams []string) error {
	var listen []string
	status, err := c.Do(ctx, http.MethodGet, "/config/apps/http/servers/"+r.ID+"/listen", nil, &listen)
	if err != nil {
		return err
	}
	if status == http.StatusOK && slices.Equal(listen, []string{r.Listen}) {
		ups := make([]upstream, len(upstreams))
		for i, u := range upstreams {
			ups[i] = upstream{Dial: u}
		}
		status, err = c.Do(ctx, http.MethodPatch, "/id/"+r.ID+"/upstreams", ups, nil)
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
	status, err = c.Do(ctx, http.MethodPut, path, r.Server(upstreams), nil)
	if err != nil {
		return err
	}
	if status == http.StatusConflict {
		status, err = c.Do(ctx, http.MethodPost, path, r.Server(upstreams), nil)
		if err != nil {
			return err
		}
	}
	if status != http.StatusOK {
		return fmt.Errorf("caddy %s %s: status %d", http.MethodPut, path, status)
	}
	return nil
}

// Upstreams returns the dial addresses a route proxies to, or nil when the
// route does not exist.
func (c *Client) Upstreams(ctx context.Context, id string) ([]string, error) {
	var ups []upstream
	status, err := c.Do(ctx, http.MethodGet, "/id/"+id+"/upstreams", nil, &ups)
	if err != nil || status != http.StatusOK {
		return nil, err
	}
	dials := make([]string, len(ups))
	for i, u := range ups {
		dials[i] = u.Dial
	}
	return dials, nil
}

// Remove deletes a route's server; a missing one is fine.
func (c *Client) Remove(ctx context.Context, id string) error {
	_, err := c.Do(ctx, http.MethodDelete, "/config/apps/http/servers/"+id, nil, nil)
	return err
}

// Do sends one admin request. "Not there" (404, or 400 for a traversal
// into a missing key) and "already there" (409, or 500 for a PUT of an
// existing key) come back as 404 and 409 for the caller to decide; any
// other non-200 is an error carrying Caddy's message.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (int, error) {
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
func (c *Client) send(ctx context.Context, method, path string, payload []byte) (status int, raw []byte, err error) {
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

// Probe tells Caddy's admin API from any other server that answers HTTP:
// GET /config/ answers 200 with JSON, and GET /reverse_proxy/upstreams,
// which only Caddy's reverse_proxy module serves, a JSON array. It is one
// attempt each: doctor reports what it finds.
func (c *Client) Probe(ctx context.Context) error {
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
			return fmt.Errorf("%w: %w", ErrNoAnswer, err)
		case status != http.StatusOK:
			return fmt.Errorf("%s answers but is not Caddy's admin API: %d %s to GET %s", c.admin, status, http.StatusText(status), p.path)
		case !p.ok(raw):
			return fmt.Errorf("%s answers but is not Caddy's admin API: GET %s answers %s, not %s", c.admin, p.path, quoteStart(raw), p.want)
		}
	}
	return nil
}

// ErrNoAnswer is a peer that did not answer at all.
var ErrNoAnswer = errors.New("no answer")

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
