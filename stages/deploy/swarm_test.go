package deploy

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"github.com/sweepboard/release/stages"
)

// The swarm tests run on the second engine, made a single-node swarm
// manager advertising 127.0.0.1, so the main engine's tests are untouched.

// needSwarm makes host2 a swarm manager when it is not one yet.
func needSwarm(tb testing.TB) {
	tb.Helper()
	needParts(tb, host2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := dockerClient(tb, host2)
	info, err := cli.Info(ctx)
	need(tb, "docker engine "+host2, err)
	if info.Swarm.ControlAvailable {
		return
	}
	_, err = cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: "127.0.0.1:2377", AdvertiseAddr: "127.0.0.1"})
	need(tb, "swarm init on "+host2, err)
	tb.Logf("swarm init on %s, advertising 127.0.0.1", host2)
}

// swarmTestSpec is one service, auth, on a swarm environment on host2
// behind Caddy.
func swarmTestSpec(tb testing.TB, environment string) *stages.Spec {
	tb.Helper()
	spec := testSpec(tb, environment, []string{host2}, true)
	delete(spec.Services, "api")
	delete(spec.Services, "web")
	e := spec.Environments[environment]
	e.Swarm = true
	spec.Environments[environment] = e
	tb.Cleanup(func() { removeSwarm(tb, environment) })
	removeSwarm(tb, environment)
	return spec
}

// removeSwarm removes the test environment's swarm services.
func removeSwarm(tb testing.TB, environment string) {
	ctx := context.Background()
	cli := dockerClient(tb, host2)
	list, err := cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelEnvironment+"="+environment))})
	if err != nil {
		return
	}
	for _, s := range list {
		if err := cli.ServiceRemove(ctx, s.ID); err != nil {
			tb.Logf("cleanup: remove service %s: %v", s.Spec.Name, err)
		}
	}
}

// swarmDigests returns the images of the tasks swarm wants running, by
// service, and checks each runs.
func swarmDigests(t *testing.T, spec *stages.Spec, environment string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for _, l := range mustInspect(t, spec, environment) {
		if l.State != "running" || !l.Healthy {
			t.Errorf("%s: task %s %s, health: %s", l.Service, l.Container, l.State, l.Health)
		}
		got[l.Service] = append(got[l.Service], l.Digest)
	}
	return got
}

func TestSwarmPromoteUnderLoad(t *testing.T) {
	needSwarm(t)
	needReloadSafety(t)
	env := envName("t-swarm")
	spec := swarmTestSpec(t, env)
	failFast(spec, "auth")
	v1 := release(t, "v1", []string{"auth"})
	v2 := release(t, "v2", []string{"auth"})
	bad := release(t, "v3", []string{"auth"}, "auth")
	s := &Stage{}

	if r := deploy(t, s, spec, env, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	if got, want := swarmDigests(t, spec, env)["auth"], []string{v1["auth"]}; !equalStrings(got, want) {
		t.Fatalf("after v1, tasks run %v, want %v", got, want)
	}
	url := "http://" + spec.Environments[env].Proxy.Listen["auth"]

	// v2 over v1, under load: a start-first rolling update.
	l := startLoad([]string{url}, 8)
	time.Sleep(500 * time.Millisecond)
	r := deploy(t, s, spec, env, "v2", v2)
	time.Sleep(500 * time.Millisecond)
	l.finish()
	t.Logf("v1 -> v2: %d requests answered, %d failed, slowest beyond its work %s", l.ok.Load(), l.failed.Load(), l.slowest.Round(time.Millisecond))
	if r.err != nil {
		t.Fatalf("deploy v2: %v", r.err)
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("v1 -> v2: %d failed requests, first: %q", n, l.errs)
	}
	if l.ok.Load() < 50 {
		t.Errorf("v1 -> v2: only %d requests answered", l.ok.Load())
	}
	if _, ok := l.first["auth v2"]; !ok {
		t.Errorf("v1 -> v2: no request answered by v2; versions seen: %v", l.first)
	}
	if got, want := swarmDigests(t, spec, env)["auth"], []string{v2["auth"]}; !equalStrings(got, want) {
		t.Errorf("after v2, tasks run %v, want %v", got, want)
	}

	// A second deploy of v2 finds it and changes nothing.
	if r := deploy(t, s, spec, env, "v2", v2); r.err != nil || !strings.Contains(r.log, "found swarm service") {
		t.Errorf("deploy v2 again: %v\n%s", r.err, r.log)
	}

	// v3 fails its health check: swarm rolls back, v2 keeps serving.
	l = startLoad([]string{url}, 8)
	r = deploy(t, s, spec, env, "v3", bad)
	l.finish()
	t.Logf("v2 -> v3 (unhealthy): %d requests answered, %d failed", l.ok.Load(), l.failed.Load())
	if r.err == nil {
		t.Fatal("deploy of an unhealthy v3 succeeded")
	}
	msg := r.err.Error()
	t.Logf("v3 failed with: %v", r.err)
	for _, want := range []string{"auth", "rollback", "unhealthy"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %q", msg, want)
		}
	}
	if !stages.IsPermanent(r.err) {
		t.Errorf("error %v is not permanent", r.err)
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("v2 -> v3: %d failed requests, first: %q", n, l.errs)
	}
	if got, want := swarmDigests(t, spec, env)["auth"], []string{v2["auth"]}; !equalStrings(got, want) {
		t.Errorf("after the rollback, tasks run %v, want %v", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSwarmHostPortTaken holds the ports after the one v1's task got, the
// ones the engine picks next, the way another engine's containers on the
// same host do: v2's first task cannot bind and swarm rolls the update
// back; the deploy updates again and the next task gets a free port.
func TestSwarmHostPortTaken(t *testing.T) {
	needSwarm(t)
	env := envName("t-swarm-port")
	spec := swarmTestSpec(t, env)
	v1 := release(t, "v1", []string{"auth"})
	v2 := release(t, "v2", []string{"auth"})
	s := &Stage{}
	r := deploy(t, s, spec, env, "v1", v1)
	if r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	m := regexp.MustCompile(`now proxies to 127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(r.log, -1)
	if m == nil {
		t.Fatalf("no switch in the log of v1:\n%s", r.log)
	}
	p1, _ := strconv.Atoi(m[len(m)-1][1])
	held := 0
	for p := p1 + 1; p <= p1+15; p++ {
		// Swarm publishes on all interfaces: a port held on any is taken.
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			held++
			t.Cleanup(func() { l.Close() })
		}
	}
	r = deploy(t, s, spec, env, "v2", v2)
	if r.err != nil {
		t.Fatalf("deploy v2 with ports %d-%d taken: %v\n%s", p1+1, p1+15, r.err, r.log)
	}
	again := strings.Count(r.log, "updating again")
	if again == 0 {
		t.Errorf("the deploy never updated again; log:\n%s", r.log)
	}
	if got, want := swarmDigests(t, spec, env)["auth"], []string{v2["auth"]}; !equalStrings(got, want) {
		t.Errorf("after v2, tasks run %v, want %v", got, want)
	}
	checkProxy(t, spec, env, "auth", "auth v2")
	t.Logf("measured: v1 on port %d; %d of the next 15 ports held here; v2 updated %d times", p1, held, again+1)
}

// TestSwarmChain: the eight chained services as Swarm services, on the
// environment's overlay network: a request through the whole chain from a
// container on the network answers with every service.
func TestSwarmChain(t *testing.T) {
	needSwarm(t)
	environment := envName("t-swarmchain")
	spec, names := chainSpec(t, environment, []string{host2})
	e := spec.Environments[environment]
	e.Target = "swarm"
	spec.Environments[environment] = e
	t.Cleanup(func() { removeSwarm(t, environment) })
	removeSwarm(t, environment)
	refs := map[string]string{}
	for _, n := range names {
		refs[n] = pushFixture(t, n, "v1")
	}
	if r := deploy(t, &Stage{StopTimeout: 2 * time.Second}, spec, environment, "1.0.0", refs); r.err != nil {
		t.Fatalf("deploy: %v", r.err)
	}
	out, code := runProbe(t, host2, spec, environment, "get", "http://front:8080/chain")
	var want strings.Builder
	for _, n := range names {
		fmt.Fprintf(&want, "%s v1\n", n)
	}
	if code != 0 || out != strings.TrimSpace(want.String()) {
		t.Errorf("GET http://front:8080/chain on the overlay: exit %d\n%s\nwant\n%s", code, out, want.String())
	}
}
