package main

// Broken peers, as a team's CI meets them: six peers that each fail in their
// own way, started by the test, all on 127.0.0.1:
//
//	refused      a closed port
//	black hole   a port whose packets an iptables DROP rule swallows
//	silent       accepts and never answers
//	trickle      answers one byte a second and never finishes its headers
//	garbage      answers whatever arrives (a TLS ClientHello, an HTTP
//	             request, a PostgreSQL startup) with random bytes
//	poser        an HTTP server that answers 404 to everything, posing as
//	             Caddy
//
// TestDoctorBrokenPeers makes them the registry, the git remotes, the Docker
// hosts, the Caddy admin APIs, GitHub's api_url and the state store of one
// pipeline: `release doctor` returns within 15 s with every check failed and
// named. TestRunBrokenPeers makes each the registry and the git remote of a
// `release run` once the run has pinned its commits: the run fails within its
// deadline naming the peer, exits 3, and `release resume` finishes it once
// the peer is fixed.
//
// As root (for the iptables rule), with the real parts up:
//
//	eval "$(fixtures/up.sh)"
//	go test -count=1 -run 'TestDoctorBrokenPeers|TestRunBrokenPeers' -v ./cmd/release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/gitserver"
)

// The kinds of broken peer.
const (
	peerRefused   = "refused"
	peerBlackHole = "black hole"
	peerSilent    = "silent"
	peerTrickle   = "trickle"
	peerGarbage   = "garbage"
	peerPoser     = "poser"
)

var peerKinds = []string{peerRefused, peerBlackHole, peerSilent, peerTrickle, peerGarbage, peerPoser}

// needIptables fails the test when CI is set and the iptables rule of the black
// hole cannot be made, and skips it otherwise.
func needIptables(t *testing.T) {
	t.Helper()
	err := exec.Command("iptables", "-w", "-S", "OUTPUT").Run()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("iptables (the black-holed peer needs root): %v", err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set")
	}
	t.Skip(msg)
}

// freePort is a 127.0.0.1 port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dropPort drops every packet to 127.0.0.1:port until the test ends.
func dropPort(t *testing.T, port int) {
	t.Helper()
	rule := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1", "--dport", strconv.Itoa(port), "-j", "DROP"}
	if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I %s: %v\n%s", strings.Join(rule, " "), err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("iptables", append([]string{"-w", "-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("iptables -D %s: %v\n%s", strings.Join(rule, " "), err, out)
		}
	})
}

// misbehave is what a broken peer of kind does with one accepted
// connection; it returns when the peer is done with it or stop is closed.
func misbehave(kind string, c net.Conn, stop <-chan struct{}) {
	defer c.Close()
	wait := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	switch kind {
	case peerSilent:
		<-stop
	case peerTrickle:
		// One byte of the request is enough to start answering.
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return
		}
		msg := "HTTP/1.1 200 OK\r\nX-Slow: " + strings.Repeat("a", 4096)
		for i := 0; i < len(msg); i++ {
			if _, err := c.Write([]byte{msg[i]}); err != nil || !wait(time.Second) {
				return
			}
		}
	case peerGarbage:
		if _, err := c.Read(make([]byte, 4096)); err != nil {
			return
		}
		junk := make([]byte, 512)
		rand.Read(junk)
		junk[0] = 0xfe // neither a TLS record nor "HTTP/" nor a PostgreSQL reply
		c.Write(junk)
		wait(time.Second)
	case peerPoser:
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			body := "404 page not found\n"
			fmt.Fprintf(c, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
}

// brokenPeer starts a peer of kind and returns its address.
func brokenPeer(t *testing.T, kind string) string {
	t.Helper()
	switch kind {
	case peerRefused:
		return fmt.Sprintf("127.0.0.1:%d", freePort(t))
	case peerBlackHole:
		port := freePort(t)
		dropPort(t, port)
		return fmt.Sprintf("127.0.0.1:%d", port)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { misbehave(kind, c, stop) })
		}
	})
	return l.Addr().String()
}

// brokenDoctorPipeline puts every broken peer somewhere doctor looks.
const brokenDoctorPipeline = `
name: brokendoctor
registry: {url: "SILENT", insecure: true}
github: {owner: sweepboard, api_url: "http://TRICKLE/", token_env: GITHUB_TOKEN}
repos:
  api:  {url: "http://BLACKHOLE/sweepboard/api.git"}
  web:  {url: "http://TRICKLE/sweepboard/web.git"}
  auth: {url: "https://GARBAGE/sweepboard/auth.git"}
  db:   {url: "http://REFUSED/sweepboard/db.git"}
  ui:   {url: "http://SILENT/sweepboard/ui.git"}
  docs: {url: "http://POSER/sweepboard/docs.git"}
services:
  api: {repo: api, image: brokendoctor/api, port: 8080}
environments:
  dev:     {hosts: ["tcp://REFUSED"]}
  staging: {hosts: ["tcp://GARBAGE"], proxy: {caddy: "http://POSER", listen: {api: "127.0.0.1:1"}}}
  prod:    {hosts: ["tcp://BLACKHOLE"], proxy: {caddy: "http://SILENT", listen: {api: "127.0.0.1:1"}}}
  qa:      {hosts: ["tcp://TRICKLE"], proxy: {caddy: "http://TRICKLE", listen: {api: "127.0.0.1:1"}}}
  uat:     {hosts: ["tcp://SILENT"], proxy: {caddy: "http://REFUSED", listen: {api: "127.0.0.1:1"}}}
  demo:    {hosts: ["tcp://POSER"], proxy: {caddy: "http://BLACKHOLE", listen: {api: "127.0.0.1:1"}}}
stages:
  build:  {uses: docker-build, for_each: service, with: {host: "tcp://BLACKHOLE"}}
  push:   {uses: docker-push, for_each: service, needs: [build], with: {host: "tcp://BLACKHOLE"}}
  deploy: {uses: deploy, environment: dev, needs: [push]}
  tag:    {uses: git-tag, needs: [deploy]}
  notes:  {uses: github-release, needs: [tag]}
`

// TestDoctorBrokenPeers: doctor against six broken peers returns within
// 15 s, every check failed, each naming its peer.
func TestDoctorBrokenPeers(t *testing.T) {
	t.Parallel() // it mostly waits (leases, deadlines): beside the others that do
	needIptables(t)
	bin := buildRelease(t)
	dir := t.TempDir()
	peers := map[string]string{}
	y := brokenDoctorPipeline
	for _, kind := range peerKinds {
		peers[kind] = brokenPeer(t, kind)
		y = strings.ReplaceAll(y, strings.ToUpper(strings.ReplaceAll(kind, " ", "")), peers[kind])
	}
	t.Logf("peers: %v", peers)
	if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runIn(dir, bin, "validate"); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "doctor")
	cmd.Dir = dir
	// The state store: a PostgreSQL URL on the garbage peer.
	state := "postgres://release@" + peers[peerGarbage] + "/release?sslmode=disable"
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "GITHUB_TOKEN=not-a-real-token", "RELEASE_STATE="+state)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	r := resultOf(t, []string{"doctor"}, err, &stdout, &stderr)
	t.Logf("release doctor: exit %d in %v\n%s", r.code, took.Round(time.Millisecond), r.stdout)
	if took > 15*time.Second {
		t.Errorf("doctor took %v, want at most 15s", took)
	}
	if r.code != 1 {
		t.Errorf("doctor exit %d, want 1\n%s", r.code, r)
	}

	// check name → the peer it meets
	want := map[string]string{
		"state store " + state: peerGarbage,
		"docker engine tcp://" + peers[peerBlackHole] + " (build)": peerBlackHole,
		"registry " + peers[peerSilent]:                            peerSilent,
		"docker host tcp://" + peers[peerRefused]:                  peerRefused,
		"docker host tcp://" + peers[peerGarbage]:                  peerGarbage,
		"docker host tcp://" + peers[peerBlackHole]:                peerBlackHole,
		"docker host tcp://" + peers[peerTrickle]:                  peerTrickle,
		"docker host tcp://" + peers[peerSilent]:                   peerSilent,
		"docker host tcp://" + peers[peerPoser]:                    peerPoser,
		"git remote of repo api":                                   peerBlackHole,
		"git remote of repo web":                                   peerTrickle,
		"git remote of repo auth":                                  peerGarbage,
		"git remote of repo db":                                    peerRefused,
		"git remote of repo ui":                                    peerSilent,
		"git remote of repo docs":                                  peerPoser,
		"github releases of sweepboard/api":                        peerTrickle,
	}
	for _, kind := range []string{peerPoser, peerSilent, peerTrickle, peerRefused, peerBlackHole} {
		want["caddy admin http://"+peers[kind]] = kind
		want["caddy reloads without resets http://"+peers[kind]] = kind
	}
	lines := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		verdict, rest, _ := strings.Cut(line, "  ")
		rest = strings.TrimSpace(rest)
		if verdict != "FAIL" {
			t.Errorf("a check passed against the broken peers: %q", line)
			continue
		}
		name, msg, _ := strings.Cut(rest, ": ")
		// The store check's name is its URL, which has a colon.
		if strings.HasPrefix(rest, "state store ") {
			name, msg, _ = strings.Cut(strings.TrimPrefix(rest, "state store "), ": ")
			name = "state store " + name
		}
		lines[name] = msg
	}
	for name, kind := range want {
		msg, ok := lines[name]
		switch {
		case !ok:
			t.Errorf("no FAIL line for %q (the %s peer %s)", name, kind, peers[kind])
		case strings.HasPrefix(name, "caddy reloads"):
			if !strings.Contains(msg, "Caddy did not answer") {
				t.Errorf("%s: %q, want it to say Caddy did not answer", name, msg)
			}
		case kind == peerPoser && strings.HasPrefix(name, "caddy admin"):
			if !strings.Contains(msg, "answers but is not Caddy's admin API: 404") {
				t.Errorf("%s: %q, want it to say it is not Caddy", name, msg)
			}
		case !strings.Contains(name+msg, peers[kind]) && !strings.Contains(msg, "no answer within"):
			t.Errorf("%s: %q names neither the %s peer %s nor the bound", name, msg, kind, peers[kind])
		}
	}
	for name := range lines {
		if _, ok := want[name]; !ok {
			t.Logf("also failed: %s: %s", name, lines[name])
		}
	}
}

// modalProxy forwards TCP connections to a healthy peer until broken, then
// behaves as a broken peer of its kind on the same address until fixed.
type modalProxy struct {
	t      *testing.T
	addr   string
	port   int
	target string
	kind   string

	mu      sync.Mutex
	broken  bool
	ln      net.Listener
	conns   map[net.Conn]bool
	unblock func()
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newModalProxy(t *testing.T, target, kind string) *modalProxy {
	t.Helper()
	port := freePort(t)
	p := &modalProxy{t: t, port: port, addr: fmt.Sprintf("127.0.0.1:%d", port), target: target, kind: kind,
		conns: map[net.Conn]bool{}, stop: make(chan struct{})}
	p.listen()
	t.Cleanup(func() {
		p.fix()
		close(p.stop)
		p.mu.Lock()
		if p.ln != nil {
			p.ln.Close()
		}
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *modalProxy) listen() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("listen again on %s: %v", p.addr, err)
	}
	p.ln = ln
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			broken := p.broken
			p.conns[c] = true
			p.mu.Unlock()
			p.wg.Go(func() {
				defer func() {
					p.mu.Lock()
					delete(p.conns, c)
					p.mu.Unlock()
				}()
				if broken {
					misbehave(p.kind, c, p.stop)
					return
				}
				p.forward(c)
			})
		}
	})
}

func (p *modalProxy) forward(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, up)
		p.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// breakNow cuts every open connection and turns the proxy into its broken
// peer.
func (p *modalProxy) breakNow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken {
		return
	}
	p.broken = true
	for c := range p.conns {
		c.Close()
	}
	switch p.kind {
	case peerRefused:
		p.ln.Close()
		p.ln = nil
	case peerBlackHole:
		rule := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1", "--dport", strconv.Itoa(p.port), "-j", "DROP"}
		if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, rule...)...).CombinedOutput(); err != nil {
			p.t.Errorf("iptables -I: %v\n%s", err, out)
			return
		}
		p.unblock = func() {
			if out, err := exec.Command("iptables", append([]string{"-w", "-D"}, rule...)...).CombinedOutput(); err != nil {
				p.t.Errorf("iptables -D: %v\n%s", err, out)
			}
		}
	}
}

// fix makes the proxy forward again.
func (p *modalProxy) fix() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.broken {
		return
	}
	p.broken = false
	for c := range p.conns {
		c.Close()
	}
	if p.unblock != nil {
		p.unblock()
		p.unblock = nil
	}
	if p.ln == nil {
		p.listen()
	}
}

// breakOn breaks the proxies once the file at path exists.
func breakOn(t *testing.T, path string, proxies ...*modalProxy) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := os.Stat(path); err == nil {
				for _, p := range proxies {
					p.breakNow()
				}
				return
			}
		}
	}()
}

// brokenRunPipeline builds an image, then breaks the peers (the exec stage
// touches the trigger file and gives the proxies time to turn), then pushes
// to the registry and tags the repo, each through a broken peer. The
// timeouts are short so that each failure is quick.
const brokenRunPipeline = `
name: {{name}}
registry: {url: "{{registry}}", insecure: true}
timeouts: {connect: 2s, tls: 2s, first_byte: 2s, idle: 2s}
repos:
  app: {url: "http://{{git}}/{{repo}}.git", token_env: GIT_TOKEN}
services:
  app: {repo: app, image: {{name}}/app, port: 8080}
stages:
  build: {uses: docker-build, for_each: service}
  break: {uses: exec, needs: [build], with: {command: [sh, -c, 'touch {{trigger}} && sleep 0.5']}}
  push:  {uses: docker-push, for_each: service, needs: [break]}
  tag:   {uses: git-tag, needs: [break]}
`

// TestRunBrokenPeers: each broken peer as the registry and the git remote
// of a run, once the run has pinned its commits. The run fails within its
// deadline naming the peers, exits 3 (resumable), and a resume after the
// peers are fixed pushes the image and the tag.
func TestRunBrokenPeers(t *testing.T) {
	t.Parallel() // it mostly waits (leases, deadlines): beside the others that do
	needFlowParts(t)
	needIptables(t)
	bin := buildRelease(t)

	// One repo with a Dockerfile that needs nothing but its context.
	root := t.TempDir()
	remotes := filepath.Join(root, "remotes")
	work := filepath.Join(root, "work")
	for _, args := range [][]string{
		{"init", "-q", "--bare", "-b", "main", filepath.Join(remotes, "app.git")},
		{"init", "-q", "-b", "main", work},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM scratch\nCOPY hello /hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "hello"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("add", ".")
	git("commit", "-q", "-m", "feat: hello")
	git("push", "-q", filepath.Join(remotes, "app.git"), "main")

	const token = "broken-run-token"
	h, err := gitserver.New(remotes, token)
	if err != nil {
		t.Fatal(err)
	}
	gitSrv := httptest.NewServer(h)
	t.Cleanup(gitSrv.Close)
	gitTarget := strings.TrimPrefix(gitSrv.URL, "http://")

	// Each peer is its own world (proxies, pipeline, image names): most of
	// the time goes to waiting out deadlines, side by side.
	for i, kind := range peerKinds {
		t.Run(strings.ReplaceAll(kind, " ", "-"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			name := fmt.Sprintf("brokenrun%d-%d", os.Getpid(), i)
			// A remote of its own, which its run tags.
			repo := fmt.Sprintf("app-%d", i)
			if out, err := exec.Command("git", "clone", "-q", "--bare", filepath.Join(remotes, "app.git"), filepath.Join(remotes, repo+".git")).CombinedOutput(); err != nil {
				t.Fatalf("git clone: %v\n%s", err, out)
			}
			regProxy := newModalProxy(t, "127.0.0.1:5000", kind)
			gitProxy := newModalProxy(t, gitTarget, kind)
			trigger := filepath.Join(dir, "broken")
			breakOn(t, trigger, regProxy, gitProxy)
			y := strings.NewReplacer("{{name}}", name, "{{registry}}", regProxy.addr, "{{git}}", gitProxy.addr, "{{repo}}", repo, "{{trigger}}", trigger).Replace(brokenRunPipeline)
			if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, ref := range []string{name + "/app", regProxy.addr + "/" + name + "/app"} {
					if ids, _ := exec.Command("docker", "images", "-q", "--filter", "reference="+ref+"*").Output(); len(bytes.TrimSpace(ids)) > 0 {
						exec.Command("docker", append([]string{"rmi", "-f"}, strings.Fields(string(ids))...)...).Run()
					}
				}
			})
			release := func(args ...string) (result, time.Duration) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "NO_COLOR=1", "GIT_TOKEN="+token, "RELEASE_USER=broken-test")
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				start := time.Now()
				err := cmd.Run()
				return resultOf(t, args, err, &stdout, &stderr), time.Since(start)
			}

			r, took := release("run", "--yes")
			t.Logf("release run against the %s peers (registry %s, git %s): exit %d in %v\n%s",
				kind, regProxy.addr, gitProxy.addr, r.code, took.Round(time.Millisecond), r.stderr)
			id := r.id()
			// Its deadline: three attempts of each call within the 2s
			// bounds, and their backoffs, with room for a loaded machine.
			if took > time.Minute {
				t.Errorf("the run took %v to fail, want it within a minute", took)
			}
			if r.code != exitFailed {
				t.Fatalf("run exit %d, want %d (a stage failed, resumable)\n%s", r.code, exitFailed, r)
			}
			st := runStatus(t, bin, dir, id)
			for node, want := range map[string]string{"build[app]": "succeeded", "break": "succeeded", "push[app]": "failed", "tag": "failed"} {
				if st[node] != want {
					t.Errorf("%s is %s after the run, want %s (statuses %v)", node, st[node], want, st)
				}
			}
			for _, peer := range []string{regProxy.addr, gitProxy.addr} {
				if !strings.Contains(r.stderr, peer) {
					t.Errorf("the run's errors do not name the peer %s:\n%s", peer, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, "release resume "+id) {
				t.Errorf("stderr does not say how to resume run %s:\n%s", id, r.stderr)
			}

			regProxy.fix()
			gitProxy.fix()
			r, took = release("resume", id)
			t.Logf("release resume once the peers are fixed: exit %d in %v", r.code, took.Round(time.Millisecond))
			if r.code != 0 {
				t.Fatalf("resume after the fix: %s", r)
			}
			st = runStatus(t, bin, dir, id)
			if st["run"] != "succeeded" || st["push[app]"] != "succeeded" || st["tag"] != "succeeded" {
				t.Errorf("after the resume: %v, want all succeeded", st)
			}
			tags, err := exec.Command("git", "-C", filepath.Join(remotes, repo+".git"), "tag", "--list").Output()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(tags), "v") {
				t.Errorf("no tag on the remote after the resume: %q", tags)
			}
		})
	}
}
