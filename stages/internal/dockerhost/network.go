package dockerhost

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

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
// The engine lets two networks have one name, and then refuses the name:
// the caller makes one deploy's calls one at a time, and a network made
// beside another one meanwhile is removed again.
func (h *Host) EnsureNetwork(ctx context.Context, name, driver string, labels map[string]string) (string, error) {
	ids, err := h.findNetworks(ctx, name, labels)
	if err != nil || len(ids) > 0 {
		if len(ids) > 0 {
			return ids[0], nil
		}
		return "", err
	}
	resp, err := h.cli.NetworkCreate(ctx, name, network.CreateOptions{
		Driver:     driver,
		Labels:     labels,
		Attachable: driver == Overlay, // a probe or job container may join
	})
	if err != nil && !cerrdefs.IsConflict(err) {
		return "", fmt.Errorf("create network %s on %s: %w", name, h.addr, err)
	}
	ids, err = h.findNetworks(ctx, name, labels)
	if err != nil {
		return "", err
	}
	if len(ids) == 0 {
		return "", fmt.Errorf("create network %s on %s: not there once made", name, h.addr)
	}
	if resp.ID != "" && resp.ID != ids[0] {
		_ = h.cli.NetworkRemove(ctx, resp.ID)
	}
	return ids[0], nil
}

// findNetworks returns the ids of the networks of that exact name, the
// first one first (by creation, then id).
func (h *Host) findNetworks(ctx context.Context, name string, labels map[string]string) ([]string, error) {
	list, err := h.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return nil, fmt.Errorf("list networks on %s: %w", h.addr, err)
	}
	list = slices.DeleteFunc(list, func(n network.Summary) bool { return n.Name != name }) // the filter matches a part
	slices.SortFunc(list, func(a, b network.Summary) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	var ids []string
	for _, n := range list {
		for k, v := range labels {
			if n.Labels[k] != v {
				return nil, fmt.Errorf("network %s on %s: exists without label %s=%s (labels %v): not made by release", name, h.addr, k, v, maps.Clone(n.Labels))
			}
		}
		ids = append(ids, n.ID)
	}
	return ids, nil
}

// RemoveNetwork removes the networks of that name; none is fine.
func (h *Host) RemoveNetwork(ctx context.Context, name string) error {
	ids, err := h.findNetworks(ctx, name, nil)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := h.cli.NetworkRemove(ctx, id); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove network %s on %s: %w", name, h.addr, err)
		}
	}
	return nil
}

// Connect joins a container to a network without aliases; one already on
// it stays as it is.
func (h *Host) Connect(ctx context.Context, net, id string) error {
	st, err := h.State(ctx, id, 0)
	if err != nil {
		return err
	}
	if _, on := st.Networks[net]; on {
		return nil
	}
	return h.connect(ctx, net, id)
}

// Alias gives a container the DNS name alias on a network, joining it when
// it is not on it. The engine has no call to change an endpoint's aliases:
// a container on the network without the alias leaves it and joins again
// (its published ports, on another network, stay).
func (h *Host) Alias(ctx context.Context, net, id, alias string) error {
	st, err := h.State(ctx, id, 0)
	if err != nil {
		return err
	}
	if have, on := st.Networks[net]; on {
		if slices.Contains(have, alias) {
			return nil
		}
		if err := h.Disconnect(ctx, net, id); err != nil {
			return err
		}
	}
	return h.connect(ctx, net, id, alias)
}

// Unalias takes the DNS name alias from a container on a network: it
// leaves the network and joins again without it, so that it still reaches
// the other containers there while it drains. A container not on the
// network is left off it.
func (h *Host) Unalias(ctx context.Context, net, id, alias string) error {
	st, err := h.State(ctx, id, 0)
	if cerrdefs.IsNotFound(err) {
		return nil // gone, and its name with it
	}
	if err != nil {
		return err
	}
	have, on := st.Networks[net]
	if !on || !slices.Contains(have, alias) {
		return nil
	}
	if err := h.Disconnect(ctx, net, id); err != nil {
		return err
	}
	return h.connect(ctx, net, id)
}

func (h *Host) connect(ctx context.Context, net, id string, aliases ...string) error {
	err := h.cli.NetworkConnect(ctx, net, id, &network.EndpointSettings{Aliases: aliases})
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
