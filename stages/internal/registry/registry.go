// Package registry is the one adapter to container registries that every
// stage and the command line share: docker-push (probe, tag by digest, the
// engine's push, the doctor check), deploy (the engine's pull) and the
// registry-side operations of promote and rollback (retag by digest, look
// up digests).
//
// One credential chain (Chain) serves them all, and its credentials come
// out in both forms a caller needs: an authn.Authenticator for
// go-containerregistry and the X-Registry-Auth header for a Docker engine.
// A Client remembers every secret the chain gave it and hides them in its
// errors (Redact, Error). Its HTTP transport has the pipeline file's
// timeouts, the plain-HTTP fallback of an insecure registry included, and
// turns a 429 (or a 503 with Retry-After) into a retry.StatusError with
// the wait the registry asked for; go-containerregistry's own retries are
// off, so that engine.Policy is the one retry policy.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Client reaches the registries of one pipeline.
type Client struct {
	Chain Chain
	// Insecure says the pipeline's registries may speak plain HTTP
	// (registry.insecure).
	Insecure bool
	// Policy is how an operation is tried (Do); New sets engine.Policy().
	Policy retry.Policy

	transport http.RoundTripper

	mu      sync.Mutex
	found   map[string]Credentials
	secrets []string
}

// New is the client of spec's registry, with spec's timeouts, reading the
// variables and the Docker config through getenv.
func New(spec *stages.Spec, getenv func(string) string) *Client {
	return &Client{
		Chain:     Chain{Pipeline: spec.Registry.URL, Getenv: getenv},
		Insecure:  spec.Registry.Insecure,
		Policy:    engine.Policy(),
		transport: asked{spec.Timeouts.Transport()},
	}
}

// NameOptions parse image references for this client.
func (c *Client) NameOptions() []name.Option {
	if c.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// Credentials are the chain's for reg (host[:port]), looked up once per
// client. Their secrets are hidden from the client's errors from then on.
func (c *Client) Credentials(ctx context.Context, reg string) (Credentials, error) {
	host := Host(reg)
	c.mu.Lock()
	creds, ok := c.found[host]
	c.mu.Unlock()
	if ok {
		return creds, nil
	}
	creds, err := c.Chain.Lookup(ctx, host)
	if err != nil {
		return creds, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.found == nil {
		c.found = map[string]Credentials{}
	}
	c.found[host] = creds
	for _, s := range creds.Secrets() {
		if s != "" && !slices.Contains(c.secrets, s) {
			c.secrets = append(c.secrets, s)
		}
	}
	return creds, nil
}

// EngineAuth is the X-Registry-Auth header for an engine that pushes or
// pulls ref.
func (c *Client) EngineAuth(ctx context.Context, ref string) (string, error) {
	r, err := name.ParseReference(ref, c.NameOptions()...)
	if err != nil {
		return "", fmt.Errorf("parse image reference %s: %w", ref, err)
	}
	creds, err := c.Credentials(ctx, r.Context().RegistryStr())
	if err != nil {
		return "", err
	}
	return creds.EngineAuth(), nil
}

// Secrets are every secret the chain has given this client.
func (c *Client) Secrets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.secrets)
}

// Redact hides the client's secrets in err: a registry or proxy may echo
// the request's Authorization header in its answer, which the errors of
// go-containerregistry and the engine quote.
func (c *Client) Redact(err error) error {
	return redact.Error(err, c.Secrets()...)
}

// Error is err of an operation on reg, redacted; when the registry refused
// access, it says why: no credentials were found for reg, or reg refused
// those of the source it names.
func (c *Client) Error(reg string, err error) error {
	if err == nil {
		return nil
	}
	err = c.Redact(err)
	host := Host(reg)
	c.mu.Lock()
	creds, looked := c.found[host]
	c.mu.Unlock()
	if !looked || !refused(err, creds.Anonymous()) {
		return err
	}
	if creds.Anonymous() {
		return fmt.Errorf("unauthorized: registry %s wants credentials and none were found (%s unset for it, no entry in the Docker config): %w", host, EnvUser, err)
	}
	return fmt.Errorf("unauthorized: registry %s refused the credentials from %s: %w", host, creds.From, err)
}

// refused says err is a registry's refusal of access: a 401, or a 403
// when no credentials were sent, or the engine's words for either.
func refused(err error, anonymous bool) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode == http.StatusUnauthorized || (anonymous && te.StatusCode == http.StatusForbidden)
	}
	return IsAuthMessage(err.Error())
}

// IsAuthMessage says an engine's message (of a push or a pull) is a
// registry's refusal of access.
func IsAuthMessage(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{"unauthorized", "authentication required", "denied", "no basic auth credentials"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// Keychain resolves every registry through the client's chain.
func (c *Client) Keychain(ctx context.Context) authn.Keychain { return keychain{c: c, ctx: ctx} }

type keychain struct {
	c   *Client
	ctx context.Context
}

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(k.ctx, r)
}

func (k keychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	creds, err := k.c.Credentials(ctx, r.RegistryStr())
	if err != nil {
		return nil, err
	}
	return creds.Authenticator(), nil
}

// Options are go-containerregistry's remote options for calls made with
// ctx: the chain's credentials, the client's transport, no retries of its
// own, and one puller and pusher that keep each repository's
// authenticated transport across calls.
func (c *Client) Options(ctx context.Context) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.Keychain(ctx)),
		remote.WithTransport(c.transport),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
	if puller, err := remote.NewPuller(opts...); err == nil {
		opts = append(opts, remote.Reuse(puller))
	}
	if pusher, err := remote.NewPusher(opts...); err == nil {
		opts = append(opts, remote.Reuse(pusher))
	}
	return opts
}

// Transport is the client's HTTP transport: the pipeline's timeouts, and
// the waits a registry asks for as retry.StatusError.
func (c *Client) Transport() http.RoundTripper { return c.transport }

// Do runs f under the client's policy.
func (c *Client) Do(ctx context.Context, what string, f func(context.Context) error) error {
	return c.Policy.Do(ctx, what, f)
}

// Ping checks that reg answers and takes the credentials the chain has for
// it (the token exchange of a bearer registry included), as `release
// doctor` asks.
func (c *Client) Ping(ctx context.Context, reg string) error {
	r, err := name.NewRegistry(reg, c.NameOptions()...)
	if err != nil {
		return fmt.Errorf("registry %q: %w", reg, err)
	}
	creds, err := c.Credentials(ctx, r.RegistryStr())
	if err != nil {
		return err
	}
	rt, err := transport.NewWithContext(ctx, r, creds.Authenticator(), c.transport, []string{r.Scope(transport.PullScope)})
	if err != nil {
		return c.Error(reg, err)
	}
	// A registry with a Basic challenge takes any credentials at the
	// handshake: the check is an authenticated request.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Scheme()+"://"+r.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return c.Error(reg, err)
	}
	defer resp.Body.Close()
	return c.Error(reg, transport.CheckError(resp, http.StatusOK))
}

// asked turns a registry's 429, or a 503 with Retry-After, into a
// retry.StatusError that carries the wait it asked for:
// go-containerregistry's transport.Error keeps the status only.
type asked struct{ inner http.RoundTripper }

func (a asked) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.inner.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "") {
		defer resp.Body.Close()
		return nil, retry.FromResponse(resp)
	}
	return resp, nil
}
