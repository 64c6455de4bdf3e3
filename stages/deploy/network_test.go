package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/sweepboard/release/stages"
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
			svc.Env = map[string]string{"UPSTREAM_URL": "http://" + next + ":8080"}
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
	environment := envName("t-chain")
	spec, names := chainSpec(t, environment, []string{host1})
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
		if failed > 0 || ok == 0 {
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
