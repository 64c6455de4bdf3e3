// Package engine connects stages to Docker engines and judges their
// failures. It is deliberately small: one place that knows how an engine
// address from the pipeline file or the environment becomes an API client
// with a connect deadline, and one classifier (Classify) that says which
// failures of the engine, and of the registries it and go-containerregistry
// talk to, are worth another attempt.
package engine

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/docker/docker/client"

	"github.com/sweepboard/release/pipeline/deadline"
)

// DefaultHost is the local engine, used when DOCKER_HOST is unset.
const DefaultHost = "unix:///var/run/docker.sock"

// An Option changes how Connect makes its client.
type Option func(*options)

type options struct {
	bounds deadline.Deadlines
}

// Bounds makes the client connect within d.Connect (the pipeline file's
// timeouts.connect; zero is deadline.DefaultConnect).
//
// Only the connect is bounded here. The idle and first-byte bounds do not
// fit an engine's API: a container stop answers after the container's stop
// timeout, a build or a wait is silent while the work goes on, and each
// caller bounds those with its context.
func Bounds(d deadline.Deadlines) Option {
	return func(o *options) { o.bounds = d }
}

// Connect returns a client of the engine at host (unix:///…, tcp://…),
// negotiating the API version with it on first use. Its connections, over
// a unix socket as over TCP, are made within the connect bound, so a
// black-holed address fails a ping within it.
func Connect(host string, opts ...Option) (*client.Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	hostURL, err := client.ParseHostURL(host)
	if err != nil {
		return nil, fmt.Errorf("connect to docker engine %s: %w", host, err)
	}
	copts := []client.Opt{client.WithHost(host), client.WithAPIVersionNegotiation()}
	if dial := dialer(hostURL.Scheme, hostURL.Host, o.bounds.Or(deadline.Deadlines{}).Connect); dial != nil {
		copts = append(copts, client.WithDialContext(dial))
	}
	cli, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, fmt.Errorf("connect to docker engine %s: %w", host, err)
	}
	return cli, nil
}

// dialer connects to the engine's socket or TCP address within connect;
// nil for a scheme it leaves to the client (npipe, ssh).
func dialer(scheme, addr string, connect time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: connect, KeepAlive: 15 * time.Second}
	switch scheme {
	case "unix":
		// The client's requests name a placeholder host: the socket is
		// the engine's address.
		return func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", addr)
		}
	case "tcp", "http", "https":
		return func(ctx context.Context, network, a string) (net.Conn, error) {
			return d.DialContext(ctx, network, a)
		}
	}
	return nil
}

// Local returns a client of the local engine: DOCKER_HOST, or DefaultHost.
func Local(opts ...Option) (*client.Client, error) { return Connect(LocalHost(), opts...) }

// HostOr is host, or LocalHost when host is empty: a stage's `host:`
// setting with its default.
func HostOr(host string) string {
	if host != "" {
		return host
	}
	return LocalHost()
}

// LocalHost is the address Local connects to.
func LocalHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return DefaultHost
}
