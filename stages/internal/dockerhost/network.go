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
	opts := network.CreateOptions{
		Driver:     driver,
		Labels:     labels,
		Attachable: driver == Overlay, // a probe or job container may join
	}
	if driver == Bridge {
		if opts.IPAM, err = h.freeSubnet(ctx, name, driver); err != nil {
			return "", err
		}
	}
	resp, err := h.cli.NetworkCreate(ctx, name, opts)
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

// freeSubnet is a subnet the engine's address pools have free, as the
// IPAM configuration of a network to create. A container keeps its
// address when it leaves such a network and joins again (see rejoin), and
// the engine lets a container ask for an address only on a network whose
// subnet was given when it was made: the engine picks the subnet for a
// network made and removed at once, and the network is then made with it.
func (h *Host) freeSubnet(ctx context.Context, name, driver string) (*network.IPAM, error) {
	probe := name + "-subnet"
	resp, err := h.cli.NetworkCreate(ctx, probe, network.CreateOptions{Driver: driver})
	if err != nil {
		return nil, fmt.Errorf("create network %s on %s: pick a subnet: %w", name, h.addr, err)
	}
	n, err := h.cli.NetworkInspect(ctx, resp.ID, network.InspectOptions{})
	if rmErr := h.cli.NetworkRemove(context.WithoutCancel(ctx), resp.ID); err == nil {
		err = rmErr
	}
	if err != nil {
		return nil, fmt.Errorf("create network %s on %s: pick a subnet: %w", name, h.addr, err)
	}
	return &network.IPAM{Config: slices.Clone(n.IPAM.Config)}, nil
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
// at the same address (see rejoin; its published ports, on another
// network, stay).
func (h *Host) Alias(ctx context.Context, net, id, alias string) error {
	st, err := h.State(ctx, id, 0)
	if err != nil {
		return err
	}
	if have, on := st.Networks[net]; on {
		if slices.Contains(have, alias) {
			return nil
		}
		return h.rejoin(ctx, net, id, st.IPs[net], alias)
	}
	return h.connect(ctx, net, id, alias)
}

// Unalias takes the DNS name alias from a container on a network: it
// leaves the network and joins again without it, at the same address, so
// that it still reaches the other containers there and finishes what it
// serves while it drains. A container not on the
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
	return h.rejoin(ctx, net, id, st.IPs[net])
}

// rejoin takes a container off a network and joins it again with the
// aliases, at the address ip it had there: its connections over the
// network outlive the gap (the peers' packets meanwhile are sent again),
// and peers that know its address keep reaching it (on the engine's
// bridge its MAC address follows from the IP address). On a network made
// without a subnet of its own (by an older release) the engine refuses an
// address, and the container joins at a new one.
//
// Meanwhile the address is free, and the engine gives the lowest free
// address to the next container that joins without asking for one. Rejoins
// ask for theirs, so they go at once, side by side; a join of a running
// container at an address the engine picks waits until none is under way
// (see join). A container that starts meanwhile takes its address at the
// start and may take the free one (starts are not held up, they are on
// every service's critical path); then the container joins at a new
// address. A stop waits for the rejoins under way, and rejoins wait for
// it: a container that exits during a peer's gap would leave that peer's
// connections to it open for good (see Stop).
func (h *Host) rejoin(ctx context.Context, net, id, ip string, aliases ...string) error {
	h.joins.RLock()
	defer h.joins.RUnlock()
	h.exits.enter(rejoining)
	defer h.exits.leave(rejoining)
	if err := h.Disconnect(ctx, net, id); err != nil {
		return err
	}
	if ip != "" {
		err := h.cli.NetworkConnect(ctx, net, id, &network.EndpointSettings{
			Aliases:    aliases,
			IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip},
		})
		if err == nil {
			return nil
		}
		if msg := err.Error(); !strings.Contains(msg, "user configured subnets") && !strings.Contains(msg, "Address already in use") {
			return fmt.Errorf("connect container %s to network %s on %s: %w", id, net, h.addr, err)
		}
	}
	return h.join(ctx, net, id, aliases...)
}

// connect joins a running container at an address the engine picks, once
// no rejoin is under way (see rejoin).
func (h *Host) connect(ctx context.Context, net, id string, aliases ...string) error {
	h.joins.Lock()
	defer h.joins.Unlock()
	return h.join(ctx, net, id, aliases...)
}

// join connects a container; a running one gets its address now, one only
// created gets it when it starts.
func (h *Host) join(ctx context.Context, net, id string, aliases ...string) error {
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
