package deploy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/caddy"
)

// TestFaultEngineRestartsMidDeploy restarts a Docker engine of the test's
// own in the middle of a start-first deploy, once the new container is
// healthy and before the proxy switches to it, and checks that the deploy
// either retries through the restart or fails naming the host, and that
// (at the latest) a second attempt converges: one container of the
// service, running the intended digest, no orphans, the proxy on it.
func TestFaultEngineRestartsMidDeploy(t *testing.T) {
	needParts(t, host1)
	eng := startEngine(t)
	environment := envName("t-fault-restart")
	health := stages.Health{HTTP: "/healthz", Timeout: 20 * time.Second}
	spec := &stages.Spec{
		Name:     pipeline,
		Services: map[string]stages.Service{"auth": {Image: pipeline + "/auth", Port: 8080, Health: health}},
		Environments: map[string]stages.Environment{environment: {
			Hosts: []string{eng.host},
			Proxy: &stages.Proxy{Caddy: caddyAdmin, Listen: map[string]string{"auth": parts.ListenAddr(t)}},
		}},
	}
	t.Cleanup(func() {
		_ = caddy.New(caddyAdmin, deadline.Deadlines{}).Remove(context.Background(), routeID(pipeline, environment, "auth"))
	})
	// The images come from the registry on 127.0.0.1:5000, which every
	// engine of this machine trusts: the deploy pulls them by digest.
	v1, v2 := release(t, "v1", []string{"auth"}), release(t, "v2", []string{"auth"})
	s := &Stage{Drain: 200 * time.Millisecond, StopTimeout: 2 * time.Second}
	if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	checkDeployed(t, spec, environment, []string{eng.host}, v1)

	// The engine restarts once the new container is healthy, before the
	// switch: the deploy meets an engine that is down, then coming up.
	var restarted time.Time
	s.hook = func(point, service string) {
		if point == "started" && restarted.IsZero() {
			restarted = time.Now()
			eng.restart(t)
		}
	}
	r := deploy(t, s, spec, environment, "v2", v2)
	s.hook = nil
	if restarted.IsZero() {
		t.Fatal("the deploy never reached the point where the engine restarts")
	}
	took := time.Since(restarted)
	retries := strings.Count(r.log, "trying again in")
	attempts := 1
	if r.err != nil {
		t.Logf("deploy v2 failed %s after the restart began (%d retries): %v", took.Round(time.Millisecond), retries, r.err)
		checkFailure(t, r.err, eng.host)
		eng.wait(t)
		attempts++
		if r := deploy(t, s, spec, environment, "v2", v2); r.err != nil {
			t.Fatalf("second attempt of deploy v2: %v", r.err)
		}
	}
	checkConverged(t, spec, environment, eng, v2, "auth v2")
	t.Logf("measured: engine restart (stop, start, answering) %s; deploy v2 done %s after the restart began; deploy attempts %d, retries inside the stage %d; converged",
		eng.restartTook().Round(time.Millisecond), took.Round(time.Millisecond), attempts, retries)

	// The engine stays down: the deploy gives up after engineAttempts tries
	// (waits shortened here), naming the host; once the engine is back, a
	// second attempt converges.
	fast := s.policy()
	fast.Backoff = 50 * time.Millisecond
	s.retry = &fast
	v3 := release(t, "v3", []string{"auth"})
	eng.stop(t)
	began := time.Now()
	r = deploy(t, s, spec, environment, "v3", v3)
	took = time.Since(began)
	if r.err == nil {
		t.Fatal("deploy v3 with the engine stopped succeeded")
	}
	retries = strings.Count(r.log, "trying again in")
	t.Logf("deploy v3 with the engine down failed after %s, %d retries: %v", took.Round(time.Millisecond), retries, r.err)
	checkFailure(t, r.err, eng.host)
	if want := fmt.Sprintf("gave up after %d attempts", engineAttempts); !strings.Contains(r.err.Error(), want) {
		t.Errorf("error %q does not say %q", r.err, want)
	}
	if retries != engineAttempts-1 {
		t.Errorf("%d retries, want %d", retries, engineAttempts-1)
	}
	eng.start(t)
	eng.wait(t)
	if r := deploy(t, s, spec, environment, "v3", v3); r.err != nil {
		t.Fatalf("second attempt of deploy v3: %v", r.err)
	}
	checkConverged(t, spec, environment, eng, v3, "auth v3")
	t.Logf("measured: engine down: %d attempts, waits doubling from %s, failed after %s; second attempt converged",
		retries+1, fast.Backoff, took.Round(time.Millisecond))
}

// checkFailure checks that a deploy failed on an unreachable engine says
// which, and leaves the run resumable.
func checkFailure(t *testing.T, err error, host string) {
	t.Helper()
	if !strings.Contains(err.Error(), host) {
		t.Errorf("error %q does not name the host %s", err, host)
	}
	if stages.IsPermanent(err) {
		t.Errorf("error %q is permanent: a resume must be allowed to try again", err)
	}
}

// checkConverged checks that the engine runs exactly one container, the
// service's, at the intended digest, and that the proxy reaches it.
func checkConverged(t *testing.T, spec *stages.Spec, environment string, eng *privateEngine, want map[string]string, answer string) {
	t.Helper()
	checkDeployed(t, spec, environment, []string{eng.host}, want)
	checkProxy(t, spec, environment, "auth", answer)
	all, err := eng.cli.ContainerList(context.Background(), container.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		var names []string
		for _, c := range all {
			names = append(names, fmt.Sprint(c.Names, " ", c.State))
		}
		t.Errorf("the engine has %d containers, want 1: %v", len(all), names)
	}
}

// privateEngine is a dockerd of the test's own: its socket, pidfile, data and exec
// roots under t.TempDir(), its own bridge, no iptables rules, the vfs
// storage driver, as fixtures/up.sh starts a spare engine.
type privateEngine struct {
	host string
	cli  *client.Client
	args []string
	log  string

	mu          sync.Mutex
	cmd         *exec.Cmd
	lastRestart time.Duration
}

func startEngine(t *testing.T) *privateEngine {
	t.Helper()
	if _, err := exec.LookPath("dockerd"); err != nil {
		need(t, "dockerd", err)
	}
	if os.Geteuid() != 0 {
		need(t, "root, to start a docker engine of the test's own", errors.New("not root"))
	}
	dir := t.TempDir()
	bridge := newBridge(t)
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	e := &privateEngine{
		host: "unix://" + sock,
		log:  filepath.Join(dir, "dockerd.log"),
		args: []string{
			"--host", "unix://" + sock, "--pidfile", filepath.Join(dir, "docker.pid"),
			"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
			"--config-file", filepath.Join(dir, "daemon.json"), "--storage-driver=vfs",
			"--bridge", bridge, "--iptables=false", "--ip-masq=false",
		},
	}
	t.Cleanup(func() {
		e.stop(t)
		unmountUnder(t, dir)
	})
	e.start(t)
	e.wait(t)
	cli, err := client.NewClientWithOpts(client.WithHost(e.host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	e.cli = cli
	return e
}

func (e *privateEngine) start(t *testing.T) {
	logf, err := os.OpenFile(e.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("dockerd", e.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed on its timeout takes its engine down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	e.mu.Lock()
	e.cmd = cmd
	e.mu.Unlock()
}

// wait waits until the engine answers.
func (e *privateEngine) wait(t *testing.T) {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(e.host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for deadline := time.Now().Add(60 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(e.log)
			t.Fatalf("dockerd on %s does not answer: %v\n%s", e.host, err, tail(b, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop stops dockerd with SIGTERM, as a service manager does, and waits
// for it; it stops its containers and its containerd first.
func (e *privateEngine) stop(t *testing.T) {
	e.mu.Lock()
	cmd := e.cmd
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Errorf("dockerd %s did not stop within 60s; killed", e.host)
		cmd.Process.Kill()
		<-done
	}
}

// restart stops dockerd and starts it again without waiting for it: the
// deploy meets an engine that is down, then coming up.
func (e *privateEngine) restart(t *testing.T) {
	start := time.Now()
	e.stop(t)
	e.start(t)
	go func() {
		// For the figure only: how long until it answers again.
		cli, err := client.NewClientWithOpts(client.WithHost(e.host), client.WithAPIVersionNegotiation())
		if err != nil {
			return
		}
		defer cli.Close()
		for time.Since(start) < time.Minute {
			if _, err := cli.Ping(context.Background()); err == nil {
				e.mu.Lock()
				e.lastRestart = time.Since(start)
				e.mu.Unlock()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func (e *privateEngine) restartTook() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastRestart
}

// newBridge creates a bridge for the engine on a 10.213.X.0/24 no
// interface of this machine uses, and deletes it at the end of the test.
func newBridge(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := "br-rff" + hex.EncodeToString(b)
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	used := func(n byte) bool {
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.213.%d.0/24", n))
		return slices.ContainsFunc(addrs, func(a net.Addr) bool {
			ipn, ok := a.(*net.IPNet)
			return ok && (subnet.Contains(ipn.IP) || ipn.Contains(subnet.IP))
		})
	}
	n := b[0]
	for i := 0; used(n); i++ {
		if i == 255 {
			t.Fatal("no free 10.213.X.0/24 for the engine's bridge")
		}
		n++
	}
	for _, args := range [][]string{
		{"link", "add", name, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("10.213.%d.1/24", n), "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", name).Run()
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip link del %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// unmountUnder detaches what a stopped engine may have left mounted under
// dir (network namespaces, shm), deepest first, so that dir can go.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.HasPrefix(fields[1], dir+"/") {
			points = append(points, fields[1])
		}
	}
	slices.Sort(points)
	slices.Reverse(points)
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", p, err)
		}
	}
}

func tail(b []byte, lines int) string {
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// TestFaultHostPortTaken holds the first ports of the kernel's range, the
// ones a fresh engine picks from first, the way containers of another
// engine on the same host do: the engine's ten tries all meet a taken
// port, and the deploy starts the container again until it gets a free one.
func TestFaultHostPortTaken(t *testing.T) {
	needParts(t, host1)
	eng := startEngine(t)
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	var first int
	if _, err := fmt.Sscan(string(raw), &first); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", raw, err)
	}
	held := map[string]bool{}
	for p := first; p < first+25; p++ {
		// A port another process holds already is just as taken.
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		held[strconv.Itoa(p)] = true
		if l, err := net.Listen("tcp", addr); err == nil {
			t.Cleanup(func() { l.Close() })
		}
	}
	environment := envName("t-port-taken")
	spec := &stages.Spec{
		Name:     pipeline,
		Services: map[string]stages.Service{"auth": {Image: pipeline + "/auth", Port: 8080, Health: stages.Health{HTTP: "/healthz", Timeout: 20 * time.Second}}},
		Environments: map[string]stages.Environment{environment: {
			Hosts: []string{eng.host},
			Proxy: &stages.Proxy{Caddy: caddyAdmin, Listen: map[string]string{"auth": parts.ListenAddr(t)}},
		}},
	}
	t.Cleanup(func() {
		_ = caddy.New(caddyAdmin, deadline.Deadlines{}).Remove(context.Background(), routeID(pipeline, environment, "auth"))
	})
	v1 := release(t, "v1", []string{"auth"})
	r := deploy(t, &Stage{Drain: 200 * time.Millisecond, StopTimeout: 2 * time.Second}, spec, environment, "v1", v1)
	if r.err != nil {
		t.Fatalf("deploy v1 with %d ports taken: %v\n%s", len(held), r.err, r.log)
	}
	checkConverged(t, spec, environment, eng, v1, "auth v1")
	again := strings.Count(r.log, "starting again")
	if again == 0 {
		t.Errorf("the deploy never started a container again; log:\n%s", r.log)
	}
	live := mustInspect(t, spec, environment)
	if len(live) != 1 {
		t.Fatalf("%d live containers, want 1", len(live))
	}
	_, port, _ := net.SplitHostPort(liveAddr(t, live[0]))
	if held[port] {
		t.Errorf("the container publishes port %s, one of the taken ones", port)
	}
	t.Logf("measured: ports %d-%d taken; container started %d times, published on %s", first, first+24, again+1, port)
}
