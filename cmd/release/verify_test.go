package main

// TestVerifyRollbackHistory runs the real binary on a one-service pipeline
// whose deploy verifies GET /ready after the switch, three releases in a
// row: the first passes; the second fails /ready because the file's env:
// for the environment sets FAIL_PATH (a change of configuration, not of
// image); the third because its image does (a commit to the repo's
// Dockerfile). Each failed one exits 3 naming the check, `release history`
// shows its deployment and then the rollback to the first release,
// `release status` shows the first release, its container answers /ready
// again (the rollback restored the previous environment variables too) and
// no request through Caddy failed meanwhile.
//
//	eval "$(fixtures/up.sh | grep ^export)"
//	CI=1 go test -count=1 -run TestVerifyRollbackHistory -v ./cmd/release

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
)

// pipelineDir is a pipeline file of the test's own in a directory of its
// own, with fresh fixture repos, run by the real binary.
type pipelineDir struct {
	t     *testing.T
	bin   string
	dir   string
	name  string
	repos string
	env   []string // added to the binary's environment
}

func newPipelineDir(t *testing.T, prefix string) *pipelineDir {
	t.Helper()
	needFlowParts(t)
	p := &pipelineDir{t: t, bin: buildRelease(t), dir: t.TempDir(), name: fmt.Sprintf("%s%d", prefix, os.Getpid())}
	p.repos, _ = parts.NewRepos(t)
	t.Cleanup(p.cleanup)
	p.cleanup()
	return p
}

// cleanup removes the pipeline's containers, networks, Caddy servers and
// local images.
func (p *pipelineDir) cleanup() {
	docker := func(args ...string) string {
		out, _ := exec.Command("docker", append([]string{"-H", parts.DockerHost}, args...)...).Output()
		return strings.TrimSpace(string(out))
	}
	if ids := docker("ps", "-aq", "--filter", "label=release.pipeline="+p.name); ids != "" {
		docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	if ids := docker("network", "ls", "-q", "--filter", "label=release.pipeline="+p.name); ids != "" {
		docker(append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:2019/config/apps/http/servers", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		var servers map[string]json.RawMessage
		json.NewDecoder(resp.Body).Decode(&servers)
		resp.Body.Close()
		for s := range servers {
			if strings.HasPrefix(s, "release_"+p.name+"_") {
				del, _ := http.NewRequest(http.MethodDelete, "http://127.0.0.1:2019/config/apps/http/servers/"+s, nil)
				if resp, err := http.DefaultClient.Do(del); err == nil {
					resp.Body.Close()
				}
			}
		}
	}
	for _, ref := range []string{p.name + "/*", "127.0.0.1:5000/" + p.name + "/*"} {
		if ids := docker("images", "-q", "--filter", "reference="+ref); ids != "" {
			docker(append([]string{"rmi", "-f"}, strings.Fields(ids)...)...)
		}
	}
}

func (p *pipelineDir) write(yaml string) {
	p.t.Helper()
	if err := os.WriteFile(filepath.Join(p.dir, "pipeline.yaml"), []byte(yaml), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pipelineDir) release(args ...string) result {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, p.bin, args...)
	cmd.Dir = p.dir
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "RELEASE_") || strings.HasPrefix(kv, "NO_COLOR=")
	})
	cmd.Env = append(cmd.Env, "NO_COLOR=1", "RELEASE_USER="+p.name)
	cmd.Env = append(cmd.Env, p.env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	r := resultOf(p.t, args, cmd.Run(), &stdout, &stderr)
	if testing.Verbose() {
		p.t.Logf("release %s: exit %d in %v", strings.Join(args, " "), r.code, time.Since(start).Round(time.Millisecond))
	}
	return r
}

func (p *pipelineDir) want(code int, args ...string) result {
	p.t.Helper()
	r := p.release(args...)
	if r.code != code {
		p.t.Fatalf("release %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
	}
	return r
}

func (p *pipelineDir) jsonOf(v any, args ...string) {
	p.t.Helper()
	r := p.want(0, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		p.t.Fatalf("release %s -o json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

// commitFile changes one file in the work clone of a fixture repo, commits
// and pushes it, and returns the commit.
func (p *pipelineDir) commitFile(repo, path, content, message string) string {
	p.t.Helper()
	work := filepath.Join(p.repos, "work", repo)
	if err := os.MkdirAll(filepath.Dir(filepath.Join(work, path)), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, path), []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
	git := func(args ...string) string {
		p.t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=Fixture Dev", "-c", "user.email=dev@sweepboard.test", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			p.t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), work, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("add", path)
	git("commit", "-q", "-m", message)
	git("push", "-q", "origin", "HEAD:main")
	return git("rev-parse", "HEAD")
}

// load sends GETs to url from a few loops until stop, counting answers
// that are not 200 and connection errors as failed.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	first      string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(url string, loops int) *load {
	l := &load{stop: make(chan struct{})}
	hc := &http.Client{Timeout: 10 * time.Second}
	for range loops {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				resp, err := hc.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("GET %s: %s", url, resp.Status)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if l.first == "" {
						l.first = err.Error()
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) String() string {
	return fmt.Sprintf("%d ok, %d failed (first: %q)", l.ok.Load(), l.failed.Load(), l.first)
}

// getBody GETs url and returns its status and body.
func getBody(url string) (int, string, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

const verifyPipeline = `
name: %[1]s
registry: {url: 127.0.0.1:5000, insecure: true}
repos:
  api: {url: %[2]s/api.git}
services:
  api:
    repo: api
    image: %[1]s/api
    port: 8080
    health: {http: /healthz, timeout: 30s}
environments:
  dev:
    hosts: [%[3]s]
    proxy: {caddy: "http://127.0.0.1:2019", listen: {api: "%[4]s"}}
%[5]s
stages:
  build:  {uses: docker-build, for_each: service}
  push:   {uses: docker-push, for_each: service, needs: [build]}
  deploy:
    uses: deploy
    environment: dev
    needs: [push]
    with:
      drain: 500ms
      verify: {http: [{service: api, path: /ready, status: 200}], bake: 3s}
`

func TestVerifyRollbackHistory(t *testing.T) {
	p := newPipelineDir(t, "verifyhist")
	listen := parts.ListenAddr(t)
	write := func(overrides string) {
		p.write(fmt.Sprintf(verifyPipeline, p.name, p.repos, parts.DockerHost, listen, overrides))
	}
	write("")
	p.want(0, "validate")
	first := p.want(0, "run", "--yes")
	var r1 runView
	p.jsonOf(&r1, "runs", "show", first.id())
	if code, body, err := getBody("http://" + listen + "/ready"); err != nil || code != 200 {
		t.Fatalf("the first release through Caddy: GET /ready: %d %q %v", code, body, err)
	}

	failing := []struct {
		name      string
		overrides string
		change    func()
	}{
		{
			name:      "env",
			overrides: "    services:\n      api: {env: {FAIL_PATH: /ready}}",
			change:    func() { parts.Commit(t, p.repos, "api", "fix: api answers faster") },
		},
		{
			name: "image",
			change: func() {
				df, err := os.ReadFile(filepath.Join(p.repos, "work", "api", "Dockerfile"))
				if err != nil {
					t.Fatal(err)
				}
				s := strings.Replace(string(df), "EXPOSE 8080\n", "EXPOSE 8080\nENV FAIL_PATH=/ready\n", 1)
				p.commitFile("api", "Dockerfile", s, "feat: api is not ready")
			},
		},
	}
	var runs []string
	for _, f := range failing {
		t.Run(f.name, func(t *testing.T) {
			p.t = t
			defer func() { p.t = t }()
			f.change()
			write(f.overrides)
			l := startLoad("http://"+listen+"/", 4)
			time.Sleep(500 * time.Millisecond)
			r := p.want(exitFailed, "run", "--yes")
			time.Sleep(500 * time.Millisecond)
			l.finish()
			t.Logf("through Caddy during the release and its rollback: %s", l)
			id := r.id()
			runs = append(runs, id)
			for _, want := range []string{"verify api GET /ready", "500", "rolled back to " + r1.Version} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not name %q:\n%s", want, r.stderr)
				}
			}
			if l.ok.Load() == 0 || l.failed.Load() > 0 {
				t.Errorf("through Caddy: %s", l)
			}
			var rv runView
			p.jsonOf(&rv, "runs", "show", id)
			if rv.Status != "failed" || rv.Version == r1.Version || rv.Version == "" {
				t.Errorf("run %s: status %s version %s, want failed at a new version", id, rv.Status, rv.Version)
			}

			var h historyView
			p.jsonOf(&h, "history", "dev")
			if len(h.Deployments) < 3 {
				t.Fatalf("history dev: %d entries, want the first release, the failed one and the rollback: %+v", len(h.Deployments), h.Deployments)
			}
			back, failed := h.Deployments[0], h.Deployments[1]
			if failed.Kind != "run" || failed.RunID != id || failed.Version != rv.Version || failed.Images["api"] != rv.Images["api"] {
				t.Errorf("history dev [1]: %+v, want the failed release %s of run %s at %s", failed, rv.Version, id, rv.Images["api"])
			}
			if back.Kind != "rollback" || back.RunID != id || back.Version != r1.Version || back.Images["api"] != r1.Images["api"] {
				t.Errorf("history dev [0]: %+v, want the rollback to %s at %s by run %s", back, r1.Version, r1.Images["api"], id)
			}
			text := p.want(0, "history", "dev").stdout
			lines := strings.Split(strings.TrimSpace(text), "\n")
			if len(lines) < 3 || !strings.HasPrefix(lines[0], r1.Version+"\t"+id+"\trollback\t") ||
				!strings.HasPrefix(lines[1], rv.Version+"\t"+id+"\trun\t") {
				t.Errorf("release history dev:\n%s", text)
			}

			var st statusView
			p.jsonOf(&st, "status", "dev")
			if len(st.Environments) != 1 || st.Environments[0].Version != r1.Version {
				t.Fatalf("status dev: %+v, want %s", st, r1.Version)
			}
			for _, s := range st.Environments[0].Services {
				if s.Digest != r1.Images["api"] || !s.Healthy || s.Drift != "" {
					t.Errorf("status dev: %+v, want %s healthy without drift", s, r1.Images["api"])
				}
			}
			if code, body, err := getBody("http://" + listen + "/ready"); err != nil || code != 200 {
				t.Errorf("after the rollback, GET /ready through Caddy: %d %q %v: the previous configuration is not back", code, body, err)
			}
		})
	}
}
