package deploy

// The tests of this package run against a real Docker engine (two for
// TestDeployTwoHosts), the registry on 127.0.0.1:5000 (and the htpasswd one
// on 127.0.0.1:5001) and Caddy's admin API on 127.0.0.1:2019. As root:
//
//	eval "$(fixtures/up.sh)"
//	go test -race -count=1 ./stages/deploy
//	go test -count=1 -run '^$' -bench . -benchtime=1x ./stages/deploy
//
// With CI set, a missing part fails the tests; otherwise they skip. The
// zero-failure tests need net.ipv4.tcp_migrate_req=1 (see doctor.go) and set
// it when they can.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/caddy"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// The real parts the tests run against: fixtures/up.sh starts them and
// prints these variables; the defaults are its addresses.
var (
	host1        = envOr("RELEASE_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
	host2        = envOr("RELEASE_TEST_DOCKER_HOST2", "unix:///var/run/docker-2.sock")
	registryAddr = envOr("RELEASE_TEST_REGISTRY", "127.0.0.1:5000")
	caddyAdmin   = envOr("RELEASE_TEST_CADDY_ADMIN", "http://127.0.0.1:2019")
)

const pipeline = "deploytest"

// envName makes a test's environment name unique to this test process, so
// that two runs of these tests on one engine never touch each other's
// containers.
func envName(base string) string { return fmt.Sprintf("%s-%d", base, os.Getpid()) }

// removeStale removes what killed test runs left behind: test containers
// older than any run of these tests.
func removeStale() {
	ctx := context.Background()
	for _, addr := range []string{host1, host2} {
		h, err := dockerhost.Open(addr)
		if err != nil {
			continue
		}
		boxes, _ := h.List(ctx, map[string]string{LabelPipeline: pipeline})
		for _, b := range boxes {
			if time.Since(b.Created) > 30*time.Minute {
				_ = h.Remove(ctx, b.ID)
			}
		}
		h.Close()
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

var tmpDir string

func TestMain(m *testing.M) {
	if cfg := os.Getenv("DEPLOY_TEST_HELPER"); cfg != "" {
		os.Exit(helperMain(cfg))
	}
	var err error
	tmpDir, err = os.MkdirTemp("", "deploytest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	removeStale()
	code := m.Run()
	os.RemoveAll(tmpDir)
	os.Exit(code)
}

// need fails the test when a real part is missing and CI is set, and skips
// it otherwise.
func need(tb testing.TB, part string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s: %v (CI is set: fixtures/up.sh must have started it)", part, err)
	}
	tb.Skipf("%s: %v (run fixtures/up.sh)", part, err)
}

// needParts checks the engines, the registry and Caddy.
func needParts(tb testing.TB, hosts ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, h := range hosts {
		if h == "" {
			need(tb, "second docker engine", errors.New("RELEASE_TEST_DOCKER_HOST2 is empty"))
		}
		cli := dockerClient(tb, h)
		_, err := cli.Ping(ctx)
		need(tb, "docker engine "+h, err)
	}
	for part, url := range map[string]string{"registry " + registryAddr: "http://" + registryAddr + "/v2/", "caddy admin " + caddyAdmin: caddyAdmin + "/config/"} {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s", url, resp.Status)
			}
		}
		need(tb, part, err)
	}
}

// needReloadSafety makes sure Caddy's config changes do not reset
// connections (see checkMigrateReq): the zero-failure tests depend on it.
// fixtures/up.sh should set it; as root, the test sets it when it is off.
func needReloadSafety(tb testing.TB) {
	tb.Helper()
	if caddy.CheckMigrateReq(caddyAdmin) == nil {
		return
	}
	err := os.WriteFile(caddy.MigrateReqPath, []byte("1\n"), 0o644)
	if err == nil {
		tb.Logf("set net.ipv4.tcp_migrate_req=1: without it a Caddy reload resets connections queued on its old listener")
		return
	}
	need(tb, "net.ipv4.tcp_migrate_req=1", err)
}

func dockerClient(tb testing.TB, h string) *client.Client {
	tb.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(h), client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

var server struct {
	once sync.Once
	path string
	err  error
}

// serverBinary builds testdata/server as a static binary, once.
func serverBinary(tb testing.TB) string {
	tb.Helper()
	server.once.Do(func() {
		server.path = filepath.Join(tmpDir, "server")
		cmd := exec.Command("go", "build", "-o", server.path, "./testdata/server")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			server.err = fmt.Errorf("go build ./testdata/server: %v\n%s", err, out)
		}
	})
	if server.err != nil {
		tb.Fatal(server.err)
	}
	return server.path
}

var images struct {
	sync.Mutex
	refs map[string]string
}

// pushImage builds an image FROM scratch of the test server for a service,
// answering version (its health check failing when failHealth), pushes it
// to the registry and returns its digest reference. Images are built once
// per test binary run.
func pushImage(tb testing.TB, service, version string, failHealth bool) string {
	tb.Helper()
	return pushTo(tb, registryAddr, "", service, version, failHealth)
}

// pushTo is pushImage to a given registry, with an X-Registry-Auth value
// ("" for none).
func pushTo(tb testing.TB, reg, auth, service, version string, failHealth bool) string {
	tb.Helper()
	key := fmt.Sprintf("%s:%s:%s:%v", reg, service, version, failHealth)
	images.Lock()
	defer images.Unlock()
	if ref, ok := images.refs[key]; ok {
		return ref
	}
	bin, err := os.ReadFile(serverBinary(tb))
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string][]byte{
		"server":  bin,
		"version": []byte(service + " " + version + "\n"),
	}
	// Metadata first and the binary before the small files: with the vfs
	// storage driver every step after a COPY copies the whole tree again,
	// and the binary's layer is shared by every version.
	// The HEALTHCHECK is what swarm environments watch.
	dockerfile := "FROM scratch\nENTRYPOINT [\"/server\"]\n" +
		"HEALTHCHECK --interval=2s --timeout=2s --retries=3 CMD [\"/server\", \"-healthcheck\"]\n" +
		"COPY server /server\nCOPY version /version\n"
	if failHealth {
		files["fail-health"] = []byte("1\n")
		dockerfile += "COPY fail-health /fail-health\n"
	}
	files["Dockerfile"] = []byte(dockerfile)
	tag := fmt.Sprintf("%s/%s/%s:%s", reg, pipeline, service, version)
	if failHealth {
		tag += "-unhealthy"
	}
	ref := buildPush(tb, tag, auth, files)
	if images.refs == nil {
		images.refs = map[string]string{}
	}
	images.refs[key] = ref
	return ref
}

// buildPush builds an image of files (a Dockerfile among them; the files
// "server" and any name starting with "bin-" executable) on host1, pushes
// it as tag and returns its digest reference.
func buildPush(tb testing.TB, tag, auth string, files map[string][]byte) string {
	tb.Helper()
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for name, data := range files {
		mode := int64(0o644)
		if name == "server" || strings.HasPrefix(name, "bin-") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}

	ctx := context.Background()
	cli := dockerClient(tb, host1)
	began := time.Now()
	resp, err := cli.ImageBuild(ctx, &ctxTar, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		tb.Fatalf("build %s: %v", tag, err)
	}
	err = dockerhost.StreamError(resp.Body)
	resp.Body.Close()
	if err != nil {
		tb.Fatalf("build %s: %v", tag, err)
	}
	ref := parts.Push(ctx, tb, cli, tag, auth)
	tb.Logf("built and pushed %s in %s", ref, time.Since(began).Round(time.Millisecond))
	return ref
}

// release pushes images of version for the given services; bad names
// services whose image fails its health check.
func release(tb testing.TB, version string, services []string, bad ...string) map[string]string {
	tb.Helper()
	refs := map[string]string{}
	for _, s := range services {
		refs[s] = pushImage(tb, s, version, contains(bad, s))
	}
	return refs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// testSpec is a pipeline of three services, web → api → auth, with one
// environment on hosts, behind Caddy when withProxy. Every test uses its
// own environment name, so tests never see each other's containers.
func testSpec(tb testing.TB, environment string, hosts []string, withProxy bool) *stages.Spec {
	tb.Helper()
	// Generous: a busy CI machine may take a while to start a container.
	health := stages.Health{HTTP: "/healthz", Timeout: 20 * time.Second}
	vol := filepath.Join(tmpDir, environment+"-data")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		tb.Fatal(err)
	}
	spec := &stages.Spec{
		Name: pipeline,
		Services: map[string]stages.Service{
			"auth": {Image: pipeline + "/auth", Port: 8080, Health: health, Env: map[string]string{"LOG_LEVEL": "info"}},
			"api": {Image: pipeline + "/api", Port: 8080, Health: health, DependsOn: []string{"auth"},
				Env: map[string]string{"LOG_LEVEL": "debug"}, Volumes: []string{vol + ":/data"}},
			"web": {Image: pipeline + "/web", Port: 8080, Health: health, DependsOn: []string{"api"}},
		},
		Environments: map[string]stages.Environment{environment: {Hosts: hosts}},
	}
	if withProxy {
		e := spec.Environments[environment]
		e.Proxy = &stages.Proxy{Caddy: caddyAdmin, Listen: map[string]string{}}
		for name := range spec.Services {
			e.Proxy.Listen[name] = parts.ListenAddr(tb)
		}
		spec.Environments[environment] = e
	}
	tb.Cleanup(func() { cleanup(tb, spec, environment) })
	cleanup(tb, spec, environment)
	return spec
}

// cleanup removes what a test environment left: containers on every host
// the tests use, and the Caddy servers.
func cleanup(tb testing.TB, spec *stages.Spec, environment string) {
	ctx := context.Background()
	for _, addr := range []string{host1, host2} {
		h, err := dockerhost.Open(addr)
		if err != nil {
			continue
		}
		boxes, _ := h.List(ctx, map[string]string{LabelPipeline: pipeline, LabelEnvironment: environment})
		for _, b := range boxes {
			if err := h.Remove(ctx, b.ID); err != nil {
				tb.Logf("cleanup: %v", err)
			}
		}
		for _, c := range probes(tb, h, environment) {
			_ = h.Remove(ctx, c.ID)
		}
		if err := h.RemoveNetwork(ctx, spec.NetworkName(environment)); err != nil {
			tb.Logf("cleanup: %v", err)
		}
		h.Close()
	}
	c := caddy.New(caddyAdmin, deadline.Deadlines{})
	for name := range spec.Services {
		_ = c.Remove(ctx, routeID(pipeline, environment, name))
	}
}

// failFast shortens a service's health timeout, for tests that wait for a
// health check to fail.
func failFast(spec *stages.Spec, service string) {
	svc := spec.Services[service]
	svc.Health.Timeout = 5 * time.Second
	spec.Services[service] = svc
}

type runResult struct {
	out stages.Outputs
	err error
	log string
}

func deploy(tb testing.TB, s *Stage, spec *stages.Spec, environment, version string, refs map[string]string) runResult {
	tb.Helper()
	var log bytes.Buffer
	env := &stages.Env{
		RunID:       "run-" + version,
		RunKind:     "run",
		Version:     version,
		Node:        "deploy-" + environment,
		Stage:       "deploy-" + environment,
		Environment: environment,
		Attempt:     1,
		Spec:        spec,
		Images:      refs,
		Log:         &syncWriter{w: &log, start: time.Now()},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	out, err := s.Run(ctx, env)
	tb.Logf("deploy %s %s took %s:\n%s", environment, version, time.Since(began).Round(time.Millisecond), log.String())
	return runResult{out: out, err: err, log: log.String()}
}

// syncWriter is a run log: each write is one line, stamped with the time
// of day and the time since the deploy began.
type syncWriter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "%s %6.2fs ", time.Now().UTC().Format("15:04:05.000"), time.Since(s.start).Seconds())
	return s.w.Write(p)
}

// running lists the containers of an environment on a host, by service.
func running(tb testing.TB, addr, environment string) map[string][]container.InspectResponse {
	tb.Helper()
	ctx := context.Background()
	h, err := dockerhost.Open(addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	boxes, err := h.List(ctx, map[string]string{LabelPipeline: pipeline, LabelEnvironment: environment})
	if err != nil {
		tb.Fatal(err)
	}
	got := map[string][]container.InspectResponse{}
	for _, b := range boxes {
		c, err := h.Client().ContainerInspect(ctx, b.ID)
		if err != nil {
			tb.Fatal(err)
		}
		got[b.Labels[LabelService]] = append(got[b.Labels[LabelService]], c)
	}
	return got
}

// runningDigest returns the registry digest reference of the image a
// container runs, as the engine knows it: the container's image id must be
// the image the reference names.
func runningDigest(tb testing.TB, addr string, c container.InspectResponse) string {
	tb.Helper()
	cli := dockerClient(tb, addr)
	img, err := cli.ImageInspect(context.Background(), c.Config.Image)
	if err != nil {
		tb.Fatalf("inspect image %s: %v", c.Config.Image, err)
	}
	if img.ID != c.Image {
		tb.Errorf("container %s runs image %s, but %s is %s", c.Name, c.Image, c.Config.Image, img.ID)
	}
	for _, d := range img.RepoDigests {
		if d == c.Config.Image {
			return d
		}
	}
	tb.Errorf("image %s: repo digests %v do not include %s", img.ID, img.RepoDigests, c.Config.Image)
	return ""
}

// load sends requests through the proxy in a loop and counts every
// non-2xx answer and connection error.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	first      map[string]time.Time // first request answered by each version, by its start
	last       map[string]time.Time // last request answered by each version, by its start
	slowest    time.Duration        // the longest wait beyond the work asked for
	errs       []string
	start      time.Time
	stop       func()
	wg         sync.WaitGroup
}

// startLoad starts workers per URL: half of them reuse keep-alive
// connections, the other half open a new connection per request, so that
// neither a closed idle connection (which Go's client retries silently)
// nor a refused new one can hide. Each asks for 20ms of work; one more
// worker per URL asks for 1.5s, so that a deploy always finds requests in
// flight on the old container.
func startLoad(urls []string, workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{first: map[string]time.Time{}, last: map[string]time.Time{}, start: time.Now(), stop: cancel}
	keepAlive := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers + 1}}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, u := range urls {
		for i := range workers + 1 {
			hc, ms := keepAlive, 20
			switch {
			case i == workers:
				ms = 1500
			case i%2 == 1:
				hc = fresh
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for ctx.Err() == nil {
					l.once(hc, fmt.Sprintf("%s/?ms=%d", u, ms), time.Duration(ms)*time.Millisecond)
				}
			}()
		}
	}
	return l
}

func (l *load) once(hc *http.Client, url string, work time.Duration) {
	start := time.Now()
	resp, err := hc.Get(url)
	if err != nil {
		l.fail(err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		l.fail(err.Error())
		return
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		l.fail(fmt.Sprintf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body))))
		return
	}
	l.ok.Add(1)
	v := strings.TrimSpace(string(body))
	l.mu.Lock()
	if first, ok := l.first[v]; !ok || start.Before(first) {
		l.first[v] = start
	}
	if start.After(l.last[v]) {
		l.last[v] = start
	}
	l.slowest = max(l.slowest, time.Since(start)-work)
	l.mu.Unlock()
}

func (l *load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, msg)
	}
	l.mu.Unlock()
}

func (l *load) finish() {
	l.stop()
	l.wg.Wait()
}

// helperConfig is what the test hands a deploy it runs in a subprocess.
type helperConfig struct {
	Spec        *stages.Spec
	Environment string
	Version     string
	Images      map[string]string
	Drain       time.Duration
	HangAt      string // hook point at which the deploy stops moving
	HangService string
}

// helperMain runs a deploy in this process, printing HANG and blocking at
// the configured hook point, so that the test can SIGKILL it right there.
func helperMain(cfg string) int {
	var c helperConfig
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	hang := func(point, service string) {
		if point == c.HangAt && service == c.HangService {
			fmt.Println("HANG", point, service)
			select {}
		}
	}
	env := &stages.Env{
		RunID: "run-killed", Version: c.Version, Environment: c.Environment,
		Spec: c.Spec, Images: c.Images, Log: os.Stderr,
	}
	if _, err := (&Stage{Drain: c.Drain, hook: hang}).Run(context.Background(), env); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("DONE")
	return 0
}

// deployKilled runs a deploy in a subprocess and SIGKILLs it once it
// reaches the hook point.
func deployKilled(tb testing.TB, c helperConfig) {
	tb.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DEPLOY_TEST_HELPER="+string(b))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				cmd.Wait()
				tb.Fatalf("deploy subprocess ended before %s %s:\n%s", c.HangAt, c.HangService, stderr.String())
			}
			if strings.HasPrefix(line, "HANG") {
				if err := cmd.Process.Kill(); err != nil {
					tb.Fatal(err)
				}
				cmd.Wait()
				tb.Logf("killed the deploy at %q:\n%s", line, stderr.String())
				return
			}
		case <-timeout:
			cmd.Process.Kill()
			cmd.Wait()
			tb.Fatalf("deploy subprocess did not reach %s %s:\n%s", c.HangAt, c.HangService, stderr.String())
		}
	}
}
