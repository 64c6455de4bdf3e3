package docker

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// Inspect lists, per host of the environment (in the file's order) and per
// service (sorted), the containers a deploy left there and whether they
// answer their health check, probed through their published port. An
// unreachable host yields one Live per service whose Health says why, so
// the caller can still report the other hosts.
func (t *Target) Inspect(ctx context.Context) []Live {
	perHost := make([][]Live, len(t.hosts))
	var wg sync.WaitGroup
	for i, h := range t.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perHost[i] = t.inspectHost(ctx, h)
		}()
	}
	wg.Wait()
	var all []Live
	for _, l := range perHost {
		all = append(all, l...)
	}
	return all
}

// Live is what runs of a service on a host.
type Live = target.Live

func (t *Target) inspectHost(ctx context.Context, h *dockerhost.Host) []Live {
	spec := t.cfg.Spec
	list, err := h.List(ctx, map[string]string{target.LabelPipeline: t.cfg.Pipeline, target.LabelEnvironment: t.cfg.Environment})
	if err != nil {
		var ls []Live
		for _, name := range spec.ServiceNames() {
			if slices.Contains(spec.ServiceIn(t.cfg.Environment, name).Hosts, h.Addr()) {
				ls = append(ls, Live{Host: h.Addr(), Service: name, State: "missing", Health: err.Error()})
			}
		}
		return ls
	}
	// Jobs of docker-run are no containers of their service.
	list = slices.DeleteFunc(list, func(c dockerhost.Container) bool { return target.IsJob(c.Labels) })
	seen := map[string]bool{}
	var ls []Live
	for _, c := range list {
		name := c.Labels[target.LabelService]
		seen[name] = true
		svc := spec.Services[name]
		l := Live{
			Host:      h.Addr(),
			Service:   name,
			Container: c.Name,
			ID:        c.ID,
			Digest:    c.Labels[target.LabelDigest],
			Version:   c.Labels[target.LabelVersion],
			RunID:     c.Labels[target.LabelRunID],
			Config:    c.Labels[target.LabelConfig],
		}
		st, err := h.State(ctx, c.ID, svc.Port)
		if err == nil && st.Image != "" {
			l.Digest = st.Image // what it runs, whatever the label says
		}
		switch {
		case err != nil:
			l.State, l.Health = "unknown", err.Error()
		case !st.Running:
			l.State, l.Health = st.Status, "not running"
		case svc.Port > 0 && st.HostPort == "" && (svc.Health.Kind() == "http" || svc.Health.Kind() == "tcp"):
			l.State, l.Health = st.Status, fmt.Sprintf("port %d not published", svc.Port)
		default:
			l.State = st.Status
			l.Healthy, l.Health, _ = check(ctx, h, c.ID, st, svc.Port, svc.Health)
		}
		ls = append(ls, l)
	}
	for _, name := range spec.ServiceNames() {
		if hosts := spec.ServiceIn(t.cfg.Environment, name).Hosts; !seen[name] && slices.Contains(hosts, h.Addr()) {
			ls = append(ls, Live{Host: h.Addr(), Service: name, State: "missing", Health: "no container"})
		}
	}
	target.SortLive(ls)
	return ls
}
