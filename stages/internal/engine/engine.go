// Package engine connects stages to Docker engines. It is deliberately
// tiny: one place that knows how an engine address from the pipeline file
// or the environment becomes an API client.
package engine

import (
	"fmt"
	"os"

	"github.com/docker/docker/client"
)

// DefaultHost is the local engine, used when DOCKER_HOST is unset.
const DefaultHost = "unix:///var/run/docker.sock"

// Connect returns a client of the engine at host (unix:///…, tcp://…),
// negotiating the API version with it on first use.
func Connect(host string) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connect to docker engine %s: %w", host, err)
	}
	return cli, nil
}

// Local returns a client of the local engine: DOCKER_HOST, or DefaultHost.
func Local() (*client.Client, error) { return Connect(LocalHost()) }

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
