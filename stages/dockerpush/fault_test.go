package dockerpush

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
)

// TestFaultRegistryStopsMidPush stops a registry of the test's own while
// the engine uploads the first layer, and checks that the push is tried a
// bounded number of times, with growing waits, and then fails naming the
// registry and the image; that the registry, started again on its storage,
// then gets the image from the same stage run again (as a resume runs it),
// with the digest the engine computed, each blob and the manifest written
// exactly once; and that one more run uploads nothing.
func TestFaultRegistryStopsMidPush(t *testing.T) {
	cli := parts.Docker(t, parts.DockerHost)
	if _, err := exec.LookPath("docker-registry"); err != nil {
		parts.Missing(t, "docker-registry", err)
	}
	reg := startRegistry(t)
	// The stage pushes through a proxy that cuts every connection and
	// stops listening when the registry stops: the engine sees a reset
	// upload, then refused connections, as with a registry that died.
	cut := newCutter(t, reg.addr)
	cut.trigger = func() {
		cut.down()
		reg.stop()
	}

	// One layer of 8 MiB of random bytes: the cut comes 1 MiB into it.
	imageID := loadRandomImage(t, cli, 8<<20)
	svc := randName("faulttest-") + "/big"
	spec := &stages.Spec{
		Name:     "faulttest",
		Registry: stages.ImageRegistry{URL: cut.addr, Insecure: true},
		Services: map[string]stages.Service{"big": {Image: svc}},
	}
	run := func() (stages.Outputs, string, time.Duration, error) {
		var log bytes.Buffer
		env := &stages.Env{
			RunID: "fault", RunKind: "run", Version: "1.0.0", Item: "big", Node: "push[big]", Stage: "push",
			Spec: spec, Inputs: map[string]stages.Outputs{"build[big]": {"imageID": imageID}}, Log: &log,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		out, err := (&Stage{Host: parts.DockerHost}).Run(ctx, env)
		return out, log.String(), time.Since(start), err
	}

	// The registry stops 1 MiB into the first layer and stays down.
	_, log, took, err := run()
	t.Logf("push with the registry stopped mid-upload failed after %s:\n%v\nlog:\n%s", took.Round(time.Millisecond), err, log)
	if !cut.fired() {
		t.Fatal("the proxy never saw a layer upload: the registry was not stopped mid-push")
	}
	if err == nil {
		t.Fatal("the push succeeded with the registry stopped")
	}
	repo := cut.addr + "/" + svc + ":1.0.0"
	for _, want := range []string{repo, "registry " + cut.addr, fmt.Sprintf("gave up after %d attempts", RetryAttempts)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if stages.IsPermanent(err) {
		t.Errorf("error %q is marked permanent: the executor's own retries and a resume must be allowed to try again", err)
	}
	tries := regexp.MustCompile(`attempt (\d) of \d to push .* trying again in (\S+)`).FindAllStringSubmatch(log, -1)
	var waits []string
	for _, m := range tries {
		waits = append(waits, m[2])
	}
	// The waits double from RetryBackoff, with up to a fifth of jitter.
	if len(waits) != RetryAttempts-1 {
		t.Errorf("waits between attempts %v, want %d", waits, RetryAttempts-1)
	}
	for i, w := range waits {
		d, err := time.ParseDuration(w)
		low := RetryBackoff << i
		if err != nil || d < low || d > low+low/5+time.Millisecond {
			t.Errorf("wait %d is %s, want %s to %s", i+1, w, low, low+low/5)
		}
	}
	// The engine counts each wait down a second at a time.
	engineRetries := strings.Count(log, "Retrying in 1 second\n")
	t.Logf("measured: %d attempts of the stage, waits %v, the engine's own layer retries before the first failure %d, failed after %s",
		len(tries)+1, waits, engineRetries, took.Round(100*time.Millisecond))
	if writes := reg.writes(t); len(writes.manifests) != 0 {
		t.Errorf("manifests written while the registry was stopping: %v", writes.manifests)
	}

	// The registry comes back on the same storage: the stage run again, as
	// a resume runs it, pushes.
	reg.start()
	cut.up()
	out, log, took, err := run()
	if err != nil {
		t.Fatalf("push after the registry came back: %v\n%s", err, log)
	}
	t.Logf("push after the registry came back: %s, %v", took.Round(time.Millisecond), out)
	if out["pushed"] != "true" || !strings.HasPrefix(out["image"], cut.addr+"/"+svc+"@sha256:") {
		t.Errorf("outputs %v, want a fresh push to %s", out, cut.addr+"/"+svc)
	}
	ref, err := name.NewTag(repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("registry GET %s: %v", ref, err)
	}
	if desc.Digest.String() != out["digest"] {
		t.Errorf("the registry holds %s at %s, the stage says %s", desc.Digest, ref, out["digest"])
	}
	insp, err := cli.ImageInspect(context.Background(), imageID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(insp.RepoDigests, out["image"]) {
		t.Errorf("the engine's repo digests %v lack %s", insp.RepoDigests, out["image"])
	}
	manifest, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := manifest.Layers()
	if err != nil {
		t.Fatal(err)
	}
	w := reg.writes(t)
	if want := []string{"/v2/" + svc + "/manifests/1.0.0"}; strings.Join(w.manifests, " ") != strings.Join(want, " ") {
		t.Errorf("manifest writes %v, want exactly %v", w.manifests, want)
	}
	if len(w.blobs) != len(layers)+1 {
		t.Errorf("blobs committed %v, want the %d layers and the config", w.blobs, len(layers))
	}
	for digest, n := range w.blobs {
		if n != 1 {
			t.Errorf("blob %s committed %d times, want once", digest, n)
		}
	}

	// Once more: the registry holds it, nothing is written.
	out2, log, _, err := run()
	if err != nil || out2["pushed"] != "false" || out2["image"] != out["image"] {
		t.Errorf("third run: %v %v, want %s not pushed again\n%s", out2, err, out["image"], log)
	}
	if w2 := reg.writes(t); len(w2.manifests) != 1 || len(w2.blobs) != len(w.blobs) {
		t.Errorf("third run wrote to the registry: manifests %v, blobs %v", w2.manifests, w2.blobs)
	}
	t.Logf("measured: converged to %s, pushed once (%d blobs, 1 manifest)", out["image"], len(w.blobs))
}

// registryProc is a docker-registry process of the test's own: its config,
// port and storage under t.TempDir(), its log in one file across restarts.
type registryProc struct {
	t      *testing.T
	addr   string
	config string
	log    string
	mu     sync.Mutex
	cmd    *exec.Cmd
}

func startRegistry(t *testing.T) *registryProc {
	t.Helper()
	dir := t.TempDir()
	r := &registryProc{t: t, addr: parts.ListenAddr(t), config: filepath.Join(dir, "config.yml"), log: filepath.Join(dir, "registry.log")}
	config := fmt.Sprintf("version: 0.1\nlog: {level: info, formatter: text}\n"+
		"storage:\n  filesystem: {rootdirectory: %s}\n  maintenance: {uploadpurging: {enabled: false}}\n"+
		"http:\n  addr: %s\n", filepath.Join(dir, "storage"), r.addr)
	if err := os.WriteFile(r.config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// start starts the registry and waits until it answers.
func (r *registryProc) start() {
	r.t.Helper()
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("docker-registry", "serve", r.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed on its timeout takes its registry down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start docker-registry: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	hc := http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := hc.Get("http://" + r.addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.log)
			r.t.Fatalf("registry on %s does not answer: %v\n%s", r.addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the registry process, abruptly, and waits for it.
func (r *registryProc) stop() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// registryWrites is what the registry's access log says was written:
// manifest paths, and each committed blob digest with its count.
type registryWrites struct {
	manifests []string
	blobs     map[string]int
}

var accessLine = regexp.MustCompile(`"PUT (/v2/\S+) HTTP/1\.1" 201 `)

func (r *registryProc) writes(t *testing.T) registryWrites {
	t.Helper()
	b, err := os.ReadFile(r.log)
	if err != nil {
		t.Fatal(err)
	}
	w := registryWrites{blobs: map[string]int{}}
	for _, m := range accessLine.FindAllStringSubmatch(string(b), -1) {
		switch path := m[1]; {
		case strings.Contains(path, "/manifests/"):
			w.manifests = append(w.manifests, path)
		case strings.Contains(path, "/blobs/uploads/"):
			_, digest, _ := strings.Cut(path, "digest=")
			digest = strings.ReplaceAll(digest, "%3A", ":")
			w.blobs[digest]++
		}
	}
	return w
}

// cutter is a TCP proxy to a registry that calls trigger once, when a
// client has sent 1 MiB of the body of its first blob upload (a PATCH),
// and that can stop listening and cut every connection (down) and listen
// again on the same address (up).
type cutter struct {
	t       *testing.T
	addr    string
	backend string
	trigger func()

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	once   sync.Once
	tfired bool
}

func newCutter(t *testing.T, backend string) *cutter {
	c := &cutter{t: t, addr: parts.ListenAddr(t), backend: backend, conns: map[net.Conn]bool{}}
	c.up()
	t.Cleanup(c.down)
	return c
}

func (c *cutter) up() {
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		c.t.Fatalf("proxy: listen on %s again: %v", c.addr, err)
	}
	c.mu.Lock()
	c.ln = ln
	c.mu.Unlock()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go c.serve(conn)
		}
	}()
}

func (c *cutter) down() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for conn := range c.conns {
		conn.Close()
	}
	clear(c.conns)
}

func (c *cutter) fired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tfired
}

func (c *cutter) track(conns ...net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln == nil {
		return false
	}
	for _, conn := range conns {
		c.conns[conn] = true
	}
	return true
}

func (c *cutter) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", c.backend)
	if err != nil {
		return
	}
	defer server.Close()
	if !c.track(client, server) {
		return
	}
	go func() {
		io.Copy(client, server)
		client.Close()
	}()
	// Client to registry, watching for the first upload's body.
	buf := make([]byte, 32<<10)
	var tail []byte
	body := -1
	for {
		n, err := client.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if body < 0 {
				seen := append(tail, chunk...)
				if i := bytes.Index(seen, []byte("PATCH /v2/")); i >= 0 {
					body = len(seen) - i
				}
				tail = append([]byte(nil), seen[max(0, len(seen)-16):]...)
			} else {
				body += n
			}
			if body >= 1<<20 && c.trigger != nil {
				now := false
				c.once.Do(func() { now = true })
				if now {
					c.mu.Lock()
					c.tfired = true
					c.mu.Unlock()
					c.trigger()
					return
				}
			}
			if _, err := server.Write(chunk); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// loadRandomImage loads an image of one layer of size random bytes into
// the engine and returns its ID; it is removed at the end of the test.
func loadRandomImage(t *testing.T, cli *client.Client, size int64) string {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: mustRootFS(t, img)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(randName("release-faulttest-") + ":src")
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.Write(tag, img, pw)) }()
	resp, err := cli.ImageLoad(context.Background(), pr)
	if err != nil {
		t.Fatalf("load image: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(msg, []byte(id.String())) && !bytes.Contains(msg, []byte(tag.String())) {
		t.Fatalf("load image %s: the engine says %s", tag, msg)
	}
	t.Cleanup(func() {
		cli.ImageRemove(context.Background(), id.String(), image.RemoveOptions{Force: true, PruneChildren: true})
	})
	return id.String()
}

func mustRootFS(t *testing.T, img v1.Image) v1.RootFS {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS
}
