package dockerhost

import (
	"context"
	"fmt"
	"maps"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
)

// Network drivers: a bridge on one plain host, an overlay across a swarm.
const (
	Bridge  = "bridge"
	Overlay = "overlay"
)

// EnsureNetwork makes sure a network of that name exists, created with the
// driver and labels when missing, and returns its id. An existing network
// is taken as it is when it carries the labels; one that does not belongs
// to someone else, and is an error rather than a place to put containers.
func (h *Host) EnsureNetwork(ctx context.Context, name, driver string, labels map[string]string) (string, error) {
	id, err := h.findNetwork(ctx, name, labels)
	if err != nil || id != "" {
		return id, err
	}
	resp, err := h.cli.NetworkCreate(ctx, name, network.CreateOptions{
		Driver:     driver,
		Labels:     labels,
		Attachable: driver == Overlay, // a probe or job container may join
	})
	if cerrdefs.IsConflict(err) {
		// Made meanwhile by another deploy of the same environment.
		return h.findNetwork(ctx, name, labels)
	}
	if err != nil {
		return "", fmt.Errorf("create network %s on %s: %w", name, h.addr, err)
	}
	return resp.ID, nil
}

func (h *Host) findNetwork(ctx context.Context, name string, labels map[string]string) (string, error) {
	list, err := h.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return "", fmt.Errorf("list networks on %s: %w", h.addr, err)
	}
	for _, n := range list {
		if n.Name != name {
			continue // the filter matches a part of the name
		}
		for k, v := range labels {
			if n.Labels[k] != v {
				return "", fmt.Errorf("network %s on %s: exists without label %s=%s (labels %v): not made by release", name, h.addr, k, v, maps.Clone(n.Labels))
			}
		}
		return n.ID, nil
	}
	return "", nil
}

// RemoveNetwork removes a network; a missing one is fine.
func (h *Host) RemoveNetwork(ctx context.Context, name string) error {
	err := h.cli.NetworkRemove(ctx, name)
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s on %s: %w", name, h.addr, err)
	}
	return nil
}

// Connect joins a container to a network with the given DNS aliases. The
// engine has no call to change an endpoint's aliases: a container already
// on the network without them leaves it first and joins again.
func (h *Host) Connect(ctx context.Context, net, id string, aliases ...string) error {
	st, err := h.State(ctx, id, 0)
	if err != nil {
		return err
	}
	if have, on := st.Networks[net]; on {
		if containsAll(have, aliases) {
			return nil
		}
		if err := h.Disconnect(ctx, net, id); err != nil {
			return err
		}
	}
	err = h.cli.NetworkConnect(ctx, net, id, &network.EndpointSettings{Aliases: aliases})
	if err != nil {
		return fmt.Errorf("connect container %s to network %s on %s: %w", id, net, h.addr, err)
	}
	return nil
}

// Disconnect takes a container off a network, and with it its aliases
// there. A container or endpoint already gone is fine.
func (h *Host) Disconnect(ctx context.Context, net, id string) error {
	err := h.cli.NetworkDisconnect(ctx, net, id, true)
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsInvalidArgument(err) {
		return fmt.Errorf("disconnect container %s from network %s on %s: %w", id, net, h.addr, err)
	}
	return nil
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}
