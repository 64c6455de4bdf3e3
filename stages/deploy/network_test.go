package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/stages"
	dockertarget "github.com/sweepboard/release/stages/deploy/docker"
	"github.com/sweepboard/release/stages/internal/caddy"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// labelProbe marks the probe containers of a test environment.
const labelProbe = "release.test.probe"

var netprobe struct {
	once sync.Once
	ref  string
	err  error
}

var fixtureService struct {
	once sync.Once
	bin  []byte
	err  error
}

// netprobeImage is the image of testdata/netprobe, in the registry.
func netprobeImage(tb testing.TB) string {
	tb.Helper()
	netprobe.once.Do(func() {
		bin := filepath.Join(tmpDir, "netprobe")
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/netprobe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			netprobe.err = fmt.Errorf("go build ./testdata/netprobe: %v\n%s", err, out)
			return
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			netprobe.err = err
			return
		}
		netprobe.ref = buildPush(tb, fmt.Sprintf("%s/%s/netprobe:%d", registryAddr, pipeline, os.Getpid()), "", map[string][]byte{
			"bin-netprobe": b,
			"Dockerfile":   []byte("FROM scratch\nENTRYPOINT [\"/bin-netprobe\"]\nCOPY bin-netprobe /bin-netprobe\n"),
		})
	})
	if netprobe.err != nil {
		tb.Fatal(netprobe.err)
	}
	return netprobe.ref
}

// pushFixture builds and pushes an image of the fixture service
// (fixtures/services) as service: the program is named after it.
func pushFixture(tb testing.TB, service, version string) string {
	tb.Helper()
	fixtureService.once.Do(func() {
		bin := filepath.Join(tmpDir, "fixture-service")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version=fixture", "-o", bin, "./fixtures/services")
		cmd.Dir = parts.Root()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fixtureService.err = fmt.Errorf("go build ./fixtures/services: %v\n%s", err, out)
			return
		}
		fixtureService.bin, fixtureService.err = os.ReadFile(bin)
	})
	if fixtureService.err != nil {
		tb.Fatal(fixtureService.err)
	}
	return buildPush(tb, fmt.Sprintf("%s/%s/chain-%s:%s", registryAddr, pipeline, service, version), "", map[string][]byte{
		"bin-" + service: fixtureService.bin,
		"Dockerfile": []byte(fmt.Sprintf("FROM scratch\nENTRYPOINT [\"/%s\"]\nENV SERVICE_VERSION=%s\n"+
			"HEALTHCHECK --interval=2s --timeout=2s --retries=3 CMD [\"/%s\", \"-healthcheck\"]\nCOPY bin-%s /%s\n",
			service, version, service, service, service)),
	})
}

// probes are the probe containers of an environment on a host.
func probes(tb testing.TB, h *dockerhost.Host, environment string) []dockerhost.Container {
	list, err := h.List(context.Background(), map[string]string{labelProbe: environment})
	if err != nil {
		tb.Logf("list probes: %v", err)
	}
	return list
}

// startProbe runs netprobe with args in a container on the environment
// network of a host.
func startProbe(tb testing.TB, addr string, spec *stages.Spec, environment string, args ...string) (*dockerhost.Host, dockerhost.Container) {
	tb.Helper()
	ref := netprobeImage(tb)
	h, err := dockerhost.Open(addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	ctx := context.Background()
	if err := h.Pull(ctx, ref, ""); err != nil {
		tb.Fatal(err)
	}
	c, err := h.Create(ctx, dockerhost.Spec{
		Name:    fmt.Sprintf("%s-probe-%d", environment, time.Now().UnixNano()),
		Image:   ref,
		Cmd:     args,
		Labels:  map[string]string{labelProbe: environment},
		Restart: "no",
		Network: spec.NetworkName(environment),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.Start(ctx, c); err != nil {
		tb.Fatal(err)
	}
	return h, c
}

// probeOutput waits for a probe to exit and returns what it wrote and its
// exit code.
func probeOutput(tb testing.TB, h *dockerhost.Host, c dockerhost.Container) (string, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	okc, errc := h.Client().ContainerWait(ctx, c.ID, container.WaitConditionNotRunning)
	code := -1
	select {
	case r := <-okc:
		code = int(r.StatusCode)
	case err := <-errc:
		tb.Fatalf("wait for %s: %v", c.Name, err)
	}
	rc, err := h.Client().ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		tb.Fatal(err)
	}
	_ = h.Remove(context.Background(), c.ID)
	return strings.TrimSpace(out.String()), code
}

// runProbe runs netprobe on the environment network until it exits.
func runProbe(tb testing.TB, addr string, spec *stages.Spec, environment string, args ...string) (string, int) {
	tb.Helper()
	h, c := startProbe(tb, addr, spec, environment, args...)
	return probeOutput(tb, h, c)
}

// checkNetwork checks that the environment network is on the host, with
// its labels, and that every container of the environment is on it under
// its service's name, with RELEASE_ENVIRONMENT and RELEASE_VERSION (when
// version is not "").
func checkNetwork(t *testing.T, spec *stages.Spec, environment, addr, version string) {
	t.Helper()
	cli := dockerClient(t, addr)
	ctx := context.Background()
	name := spec.NetworkName(environment)
	nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(nets, func(n network.Summary) bool { return n.Name == name })
	if i < 0 {
		t.Fatalf("%s: no network %s", addr, name)
	}
	if n := nets[i]; n.Driver != "bridge" || n.Labels[LabelPipeline] != pipeline || n.Labels[LabelEnvironment] != environment {
		t.Errorf("%s: network %s: driver %s, labels %v", addr, name, n.Driver, n.Labels)
	}
	for svc, cs := range running(t, addr, environment) {
		for _, c := range cs {
			ep := c.NetworkSettings.Networks[name]
			if ep == nil || !slices.Contains(ep.Aliases, svc) {
				t.Errorf("%s: %s is not on %s as %s: %+v", addr, c.Name, name, svc, ep)
			}
			for _, kv := range []string{EnvEnvironment + "=" + environment, EnvVersion + "=" + version} {
				if kv == EnvVersion+"=" {
					continue // versions differ by service
				}
				if !slices.Contains(c.Config.Env, kv) {
					t.Errorf("%s: %s env %v lacks %s", addr, c.Name, c.Config.Env, kv)
				}
			}
		}
	}
}

// chainSpec is eight fixture services, each calling the next by its
// service name on the environment network.
func chainSpec(tb testing.TB, environment string, hosts []string) (*stages.Spec, []string) {
	names := []string{"front", "cart", "pricing", "stock", "auth", "users", "audit", "store"}
	spec := &stages.Spec{Name: pipeline, Services: map[string]stages.Service{},
		Environments: map[string]stages.Environment{environment: {Hosts: hosts}}}
	for i, n := range names {
		svc := stages.Service{Image: pipeline + "/chain-" + n, Port: 8080, Health: stages.Health{HTTP: "/healthz", Timeout: 20 * time.Second}}
		if i+1 < len(names) {
			next := names[i+1]
			svc.DependsOn = []string{next}
			// Each call waits a little longer than the one it makes, so
			// that a failure says where in the chain it was. A call in
			// flight while a container changes names can wait for a TCP
			// retransmission (a second or two under load, see the
			// README): a stall, not a failure, as with a real client.
			timeout := 8*time.Second + time.Duration(len(names)-2-i)*250*time.Millisecond
			svc.Env = map[string]string{"UPSTREAM_URL": "http://" + next + ":8080", "UPSTREAM_TIMEOUT": timeout.String()}
		}
		spec.Services[n] = svc
	}
	tb.Cleanup(func() { cleanup(tb, spec, environment) })
	cleanup(tb, spec, environment)
	return spec, names
}

// TestDeployChain: eight services, each calling the next by name; a
// request through the whole chain from a container on the environment
// network answers with every service.
func TestDeployChain(t *testing.T) {
	needParts(t, host1)
	needReloadSafety(t)
	environment := envName("t-chain")
	spec, names := chainSpec(t, environment, []string{host1})
	// Caddy in front of front, as in staging and prod.
	e := spec.Environments[environment]
	front := parts.ListenAddr(t)
	e.Proxy = &stages.Proxy{Caddy: caddyAdmin, Listen: map[string]string{"front": front}}
	spec.Environments[environment] = e
	refs := map[string]string{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := pushFixture(t, n, "v1")
			mu.Lock()
			refs[n] = ref
			mu.Unlock()
		}()
	}
	wg.Wait()
	if r := deploy(t, &Stage{StopTimeout: 2 * time.Second}, spec, environment, "1.0.0", refs); r.err != nil {
		t.Fatalf("deploy: %v\n%s", r.err, r.log)
	}
	checkNetwork(t, spec, environment, host1, "1.0.0")
	out, code := runProbe(t, host1, spec, environment, "get", "http://front:8080/chain")
	var want strings.Builder
	for _, n := range names {
		fmt.Fprintf(&want, "%s v1\n", n)
	}
	if code != 0 || out != strings.TrimSpace(want.String()) {
		t.Errorf("GET http://front:8080/chain from the network: exit %d\n%s\nwant\n%s", code, out, want.String())
	}
	if resp, err := http.Get("http://" + front + "/chain"); err != nil {
		t.Errorf("GET /chain through Caddy: %v", err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strings.TrimSpace(string(body)); got != strings.TrimSpace(want.String()) {
			t.Errorf("GET /chain through Caddy: %s %q, want %q", resp.Status, got, want.String())
		}
	}

	// Every service of the chain again, under load from inside the
	// network through the whole chain.
	v2 := map[string]string{}
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := pushFixture(t, n, "v2")
			mu.Lock()
			v2[n] = ref
			mu.Unlock()
		}()
	}
	wg.Wait()
	h, load := startProbe(t, host1, spec, environment, "load", "http://front:8080/chain")
	viaCaddy := startLoad([]string{"http://" + front + "/chain"}, 2)
	time.Sleep(time.Second)
	r := deploy(t, &Stage{Drain: time.Second, StopTimeout: 2 * time.Second}, spec, environment, "2.0.0", v2)
	time.Sleep(500 * time.Millisecond)
	viaCaddy.finish()
	ok, failed, first := loadSummary(t, h, load)
	t.Logf("redeploy of the chain: %d requests through it via Caddy, %d failed %v", viaCaddy.ok.Load()+viaCaddy.failed.Load(), viaCaddy.failed.Load(), viaCaddy.errs)
	if viaCaddy.ok.Load() == 0 || viaCaddy.failed.Load() > 0 {
		t.Errorf("redeploy of the chain: %d of %d requests through it via Caddy failed: %v", viaCaddy.failed.Load(), viaCaddy.ok.Load()+viaCaddy.failed.Load(), viaCaddy.errs)
	}
	if r.err != nil {
		t.Fatalf("deploy 2.0.0: %v", r.err)
	}
	t.Logf("redeploy of the chain: %d requests through it from inside the network, %d failed (first: %s)", ok+failed, failed, first)
	if ok == 0 || failed > 0 {
		t.Errorf("redeploy of the chain: %d of %d requests through it from inside the network failed, first: %s", failed, ok+failed, first)
	}
	checkNetwork(t, spec, environment, host1, "2.0.0")

	// Every service but the last of the chain started ahead, while the one
	// it calls deployed; they took their names from the end of the chain
	// up, so that a new version answers only once the one it calls does.
	var named []string
	for _, line := range strings.Split(r.log, "\n") {
		if m := regexp.MustCompile(`: (\S+) on \S+: \S+ answers to (\S+) on `).FindStringSubmatch(line); m != nil {
			named = append(named, m[2])
		}
	}
	wantNamed := slices.Clone(names)
	slices.Reverse(wantNamed)
	if !slices.Equal(named, wantNamed) {
		t.Errorf("names taken in the order %v, want %v; log:\n%s", named, wantNamed, r.log)
	}
	for _, n := range names[:len(names)-1] {
		if !regexp.MustCompile(n + ` on \S+: started \S+ ahead`).MatchString(r.log) {
			t.Errorf("%s did not start ahead in the redeploy; log:\n%s", n, r.log)
		}
	}
}

// TestNameKeepsAddress: a container that gains or loses its name on the
// environment network leaves it and joins again (the engine cannot change
// an endpoint's aliases), at the address it had, so that connections to it
// and from it over the network outlive the change.
func TestNameKeepsAddress(t *testing.T) {
	needParts(t, host1)
	environment := envName("t-address")
	spec := testSpec(t, environment, []string{host1}, false)
	net := spec.NetworkName(environment)
	h, err := dockerhost.Open(host1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	if _, err := h.EnsureNetwork(ctx, net, dockerhost.Bridge, dockertarget.NetworkLabels(pipeline, environment)); err != nil {
		t.Fatal(err)
	}
	_, c := startProbe(t, host1, spec, environment, "load", "http://127.0.0.1:1/")
	defer h.Remove(ctx, c.ID)
	at := func() (string, []string) {
		t.Helper()
		st, err := h.State(ctx, c.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		return st.IPs[net], st.Networks[net]
	}
	ip, _ := at()
	if ip == "" {
		t.Fatalf("%s has no address on %s", c.Name, net)
	}
	for _, step := range []struct {
		name string
		do   func() error
		has  bool
	}{
		{"alias", func() error { return h.Alias(ctx, net, c.ID, "api") }, true},
		{"unalias", func() error { return h.Unalias(ctx, net, c.ID, "api") }, false},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got, aliases := at()
		if got != ip || slices.Contains(aliases, "api") != step.has {
			t.Errorf("after %s: address %s, aliases %v; want address %s, api among them %v", step.name, got, aliases, ip, step.has)
		}
	}
}

// loadSummary stops a netprobe load and returns its counts.
func loadSummary(tb testing.TB, h *dockerhost.Host, c dockerhost.Container) (ok, failed int, first string) {
	tb.Helper()
	if err := h.Stop(context.Background(), c, 10*time.Second); err != nil {
		tb.Fatal(err)
	}
	out, _ := probeOutput(tb, h, c)
	if _, err := fmt.Sscanf(out, "ok=%d failed=%d first-error=%q", &ok, &failed, &first); err != nil {
		tb.Fatalf("load summary %q: %v", out, err)
	}
	if _, slowest, found := strings.Cut(strings.TrimSpace(out), " slowest="); found {
		tb.Logf("load from inside the network: the slowest request took %s", slowest)
	}
	return ok, failed, first
}

// TestDeployInNetworkUnderLoad: without a proxy, requests from inside the
// environment network to http://api:8080 all succeed while a new version
// rolls out, and while one that fails its health check is tried: the old
// container keeps serving and nothing is left behind.
func TestDeployInNetworkUnderLoad(t *testing.T) {
	needParts(t, host1)
	environment := envName("t-netload")
	spec := testSpec(t, environment, []string{host1}, false)
	failFast(spec, "api")
	s := &Stage{Drain: time.Second, StopTimeout: 2 * time.Second}
	v1, v2 := release(t, "v1", services), release(t, "v2", services)
	bad := release(t, "v3", services, "api")
	if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}

	for _, step := range []struct {
		name    string
		version string
		refs    map[string]string
		wantErr bool
		after   map[string]string
	}{
		{"a new version", "v2", v2, false, v2},
		{"a version failing its health check", "v3", bad, true, map[string]string{"auth": bad["auth"], "api": v2["api"], "web": v2["web"]}},
	} {
		h, load := startProbe(t, host1, spec, environment, "load", "http://api:8080/")
		time.Sleep(time.Second)
		r := deploy(t, s, spec, environment, step.version, step.refs)
		time.Sleep(500 * time.Millisecond)
		ok, failed, first := loadSummary(t, h, load)
		t.Logf("%s: %d requests from inside the network, %d failed", step.name, ok+failed, failed)
		if (r.err != nil) != step.wantErr {
			t.Fatalf("%s: deploy error %v, want error %v", step.name, r.err, step.wantErr)
		}
		// Neither a rollout nor a failed new version may fail one request.
		if ok == 0 || failed > 0 {
			t.Errorf("%s: %d of %d requests to http://api:8080 failed, first: %s", step.name, failed, ok+failed, first)
		}
		// One running container per service, the old api among them after
		// the failure: nothing left behind.
		checkDeployed(t, spec, environment, []string{host1}, step.after)
		version := step.version
		if step.wantErr {
			version = ""
		}
		checkNetwork(t, spec, environment, host1, version)
	}
}

// TestDeployEnvironmentConfig: per-environment settings on two engines: a
// secret passed by name reaches the container and nothing else, a service
// pinned to one engine runs only there, health exec and the image's
// HEALTHCHECK gate a start, and an impostor is replaced.
func TestDeployEnvironmentConfig(t *testing.T) {
	needParts(t, host1, host2)
	environment := envName("t-config")
	secret := fmt.Sprintf("hunter2-%d", time.Now().UnixNano())
	spec := &stages.Spec{Name: pipeline, Services: map[string]stages.Service{
		"front": {Image: pipeline + "/chain-front", Port: 8080, Health: stages.Health{HTTP: "/healthz", Timeout: 20 * time.Second},
			Env: map[string]string{"REPORT_SECRET": "RELEASE_TEST_SECRET", "LEVEL": "file"}, EnvFrom: []string{"RELEASE_TEST_SECRET"}},
		"back":  {Image: pipeline + "/chain-back", Port: 8080, Health: stages.Health{Exec: []string{"/back", "-healthcheck"}, Timeout: 20 * time.Second}},
		"store": {Image: pipeline + "/chain-store", Port: 8080, Health: stages.Health{Timeout: 20 * time.Second}},
	}, Environments: map[string]stages.Environment{environment: {
		Hosts: []string{host1, host2},
		Services: map[string]stages.EnvService{
			"front": {Env: map[string]string{"LEVEL": "env"}, Memory: "64m", Restart: "on-failure:3"},
			"back":  {Hosts: []string{host1}},
		},
	}}}
	t.Cleanup(func() { cleanup(t, spec, environment) })
	cleanup(t, spec, environment)
	refs := map[string]string{}
	for _, n := range []string{"front", "back", "store"} {
		refs[n] = pushFixture(t, n, "v1")
	}
	s := &Stage{StopTimeout: 2 * time.Second, getenv: func(name string) (string, bool) {
		if name == "RELEASE_TEST_SECRET" {
			return secret, true
		}
		return "", false
	}}
	r := deploy(t, s, spec, environment, "1.0.0", refs)
	if r.err != nil {
		t.Fatalf("deploy: %v", r.err)
	}

	// The secret reaches the container, by name.
	want := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(secret)))
	if out, code := runProbe(t, host1, spec, environment, "get", "http://front:8080/secret"); code != 0 || out != want {
		t.Errorf("%s: /secret answers %q (exit %d), want %q", host1, out, code, want)
	}
	// The second engine of this machine runs without iptables, under the
	// first one's forwarding rules: its containers are reached on their
	// published ports.
	for _, l := range mustInspect(t, spec, environment) {
		if l.Service != "front" || l.Host != host2 {
			continue
		}
		resp, err := http.Get("http://" + liveAddr(t, l) + "/secret")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strings.TrimSpace(string(body)); got != want {
			t.Errorf("%s: /secret answers %q, want %q", host2, got, want)
		}
	}
	// And nothing else: the log, the outputs, the labels, the names.
	if strings.Contains(r.log, secret) {
		t.Errorf("the deploy log carries the secret")
	}
	for k, v := range r.out {
		if strings.Contains(k+fmt.Sprint(v), secret) {
			t.Errorf("output %s carries the secret", k)
		}
	}
	for _, h := range []string{host1, host2} {
		for svc, cs := range running(t, h, environment) {
			for _, c := range cs {
				if strings.Contains(fmt.Sprint(c.Config.Labels)+c.Name, secret) {
					t.Errorf("%s: %s carries the secret in its labels or name", h, svc)
				}
				if svc == "front" && (!slices.Contains(c.Config.Env, "LEVEL=env") || c.HostConfig.Memory != 64<<20 || c.HostConfig.RestartPolicy.Name != "on-failure") {
					t.Errorf("%s: front: env %v, memory %d, restart %v", h, c.Config.Env, c.HostConfig.Memory, c.HostConfig.RestartPolicy)
				}
			}
		}
	}

	// back runs on host1 only.
	if n1, n2 := len(running(t, host1, environment)["back"]), len(running(t, host2, environment)["back"]); n1 != 1 || n2 != 0 {
		t.Errorf("back: %d containers on %s and %d on %s, want 1 and 0", n1, host1, n2, host2)
	}
	for _, l := range mustInspect(t, spec, environment) {
		if !l.Healthy {
			t.Errorf("%s on %s: not healthy: %s", l.Service, l.Host, l.Health)
		}
	}

	// An impostor: front's name and labels on host1, another image.
	h, err := dockerhost.Open(host1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	real := running(t, host1, environment)["front"][0]
	if err := h.Remove(ctx, real.ID); err != nil {
		t.Fatal(err)
	}
	fake, err := h.Create(ctx, dockerhost.Spec{Name: strings.TrimPrefix(real.Name, "/"), Image: refs["back"], Labels: real.Config.Labels, Port: 8080, Network: spec.NetworkName(environment)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx, fake); err != nil {
		t.Fatal(err)
	}
	r = deploy(t, s, spec, environment, "1.0.0", refs)
	if r.err != nil {
		t.Fatalf("deploy again: %v", r.err)
	}
	if !strings.Contains(r.log, "is not adopted: it runs "+refs["back"]) {
		t.Errorf("the deploy did not say it replaced the impostor:\n%s", r.log)
	}
	fronts := running(t, host1, environment)["front"]
	if len(fronts) != 1 || fronts[0].ID == fake.ID || runningDigest(t, host1, fronts[0]) != refs["front"] {
		t.Errorf("after the impostor: %d front containers on %s, want one of %s", len(fronts), host1, refs["front"])
	}
}

// TestDeployReplicas: replicas: 3 runs three containers of api on the host,
// each under api's name on the network, rolled one at a time start-first
// with no failed request through Caddy or from inside the network.
func TestDeployReplicas(t *testing.T) {
	needParts(t, host1)
	needReloadSafety(t)
	environment := envName("t-replicas")
	spec := testSpec(t, environment, []string{host1}, true)
	e := spec.Environments[environment]
	e.Services = map[string]stages.EnvService{"api": {Replicas: 3}}
	spec.Environments[environment] = e
	v1, v2 := release(t, "v1", services), release(t, "v2", services)
	s := &Stage{Drain: time.Second, StopTimeout: 5 * time.Second}
	if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	checkReplicas := func(version string, refs map[string]string) {
		t.Helper()
		apis := running(t, host1, environment)["api"]
		if len(apis) != 3 {
			t.Fatalf("%d api containers, want 3", len(apis))
		}
		for _, c := range apis {
			if !c.State.Running || runningDigest(t, host1, c) != refs["api"] {
				t.Errorf("%s: %s, %s, want running %s", c.Name, c.State.Status, runningDigest(t, host1, c), refs["api"])
			}
		}
		checkNetwork(t, spec, environment, host1, version)
		ups, err := caddy.New(caddyAdmin, deadline.Deadlines{}).Upstreams(context.Background(), routeID(pipeline, environment, "api"))
		if err != nil || len(ups) != 3 {
			t.Errorf("caddy proxies api to %v (%v), want 3 upstreams", ups, err)
		}
	}
	checkReplicas("v1", v1)

	h, load := startProbe(t, host1, spec, environment, "load", "http://api:8080/")
	time.Sleep(500 * time.Millisecond)
	r, st := deployUnderLoad(t, s, spec, environment, "v1", "v2", v2)
	ok, failed, first := loadSummary(t, h, load)
	if r.err != nil {
		t.Fatalf("deploy v2: %v", r.err)
	}
	t.Logf("through caddy: %v; from inside the network: %d ok, %d failed", st, ok, failed)
	// Not one request may fail, through Caddy or inside the network.
	if st.failed != 0 || ok == 0 || failed > 0 {
		t.Errorf("failed requests: %d through caddy (%v), %d of %d from inside the network (%s)", st.failed, st.errs, failed, ok+failed, first)
	}
	checkReplicas("v2", v2)
}

// BenchmarkDeployChain deploys a new version of the eight chained services
// into a networked environment each iteration and reports how long a
// deploy takes. Run with -benchtime=3x.
func BenchmarkDeployChain(b *testing.B) {
	needParts(b, host1)
	environment := envName("b-chain")
	spec, names := chainSpec(b, environment, []string{host1})
	s := &Stage{Drain: 500 * time.Millisecond, StopTimeout: 2 * time.Second}
	versions := make([]map[string]string, b.N+1)
	for i := range versions {
		versions[i] = map[string]string{}
		for _, n := range names {
			versions[i][n] = pushFixture(b, n, fmt.Sprintf("b%d", i))
		}
	}
	if r := deploy(b, s, spec, environment, "0.0.0", versions[0]); r.err != nil {
		b.Fatal(r.err)
	}
	var took time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if r := deploy(b, s, spec, environment, fmt.Sprintf("%d.0.0", i+1), versions[i+1]); r.err != nil {
			b.Fatal(r.err)
		}
		took += time.Since(start)
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "deploy-s/op")
}

// TestRejoinWhilePeerStops has a container rejoin the network (to take or
// lose a name) while a peer it keeps a pooled connection to stops. The
// peer's closing packets, sent once and never again once its namespace is
// gone, must not fall into the gap of the rejoin: the caller's next
// request would then go out on a connection that leads nowhere and hang
// until its deadline, as one request of TestDeployChain did in CI.
func TestRejoinWhilePeerStops(t *testing.T) {
	needParts(t, host1)
	ctx := context.Background()
	h, err := dockerhost.Open(host1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	environment := envName("t-rejoin")
	net := "release-" + environment
	if _, err := h.EnsureNetwork(ctx, net, "bridge", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		list, _ := h.List(ctx, map[string]string{labelProbe: environment})
		for _, c := range list {
			_ = h.Remove(ctx, c.ID)
		}
		_ = h.RemoveNetwork(ctx, net)
	})
	ref := pushFixture(t, "rejoin", "v1")
	if err := h.Pull(ctx, ref, ""); err != nil {
		t.Fatal(err)
	}
	run := func(name string, port int, env ...string) dockerhost.Container {
		t.Helper()
		c, err := h.Create(ctx, dockerhost.Spec{
			Name:    fmt.Sprintf("%s-%s", environment, name),
			Image:   ref,
			Env:     env,
			Labels:  map[string]string{labelProbe: environment},
			Port:    port,
			Network: net,
			Restart: "no",
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	caller := run("caller", 8080, "UPSTREAM_URL=http://peer:8080")
	if err := h.Alias(ctx, net, caller.ID, "caller"); err != nil {
		t.Fatal(err)
	}
	st, err := h.State(ctx, caller.ID, 8080)
	if err != nil || st.HostPort == "" {
		t.Fatalf("caller's published port: %q, %v", st.HostPort, err)
	}
	url := "http://" + h.DialIP() + ":" + st.HostPort + "/chain"
	hc := &http.Client{Timeout: 5 * time.Second}
	get := func() (string, time.Duration, error) {
		start := time.Now()
		resp, err := hc.Get(url)
		if err != nil {
			return "", time.Since(start), err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", time.Since(start), fmt.Errorf("%s: %s", resp.Status, body)
		}
		return string(body), time.Since(start), nil
	}

	peer := run("peer-0", 0)
	if err := h.Alias(ctx, net, peer.ID, "peer"); err != nil {
		t.Fatal(err)
	}
	const rounds = 4
	for i := range rounds {
		// The caller's pool holds a connection to this peer.
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, _, err := get()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: caller never reached peer-%d: %v", i, i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		next := run(fmt.Sprintf("peer-%d", i+1), 0)
		if err := h.Alias(ctx, net, next.ID, "peer"); err != nil {
			t.Fatal(err)
		}
		// The old peer loses its name, and then stops while the caller
		// rejoins, taking off and putting back its own name.
		if err := h.Unalias(ctx, net, peer.ID, "peer"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Unalias(ctx, net, caller.ID, "caller"); err != nil {
				t.Error(err)
			}
			if err := h.Alias(ctx, net, caller.ID, "caller"); err != nil {
				t.Error(err)
			}
		}()
		if err := h.Stop(ctx, peer, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		_, took, err := get()
		t.Logf("round %d: the caller's next call took %s", i, took.Round(time.Millisecond))
		if err != nil {
			t.Errorf("round %d: the caller's next call, once its old peer stopped during its rejoin: %v", i, err)
		}
		_ = h.Remove(ctx, peer.ID)
		peer = next
	}
}
