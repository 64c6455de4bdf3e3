package main

// TestMountedCodeRecipe runs the README's recipe "Code mounted from the
// host" with the real binary, engine, registry, Caddy and git remotes: a
// service whose code is not in its image but in a repo of its own
// (`site`), checked out on the host at the release's pinned commit by
// fixtures/recipes/checkout-code.sh, mounted read-only, and refreshed in
// place by `docker-exec` of the service's own reload command. Two releases
// in a row change what GET /code answers through Caddy, with the same
// container serving throughout (same id, same start time: nothing
// restarted) and no request failing meanwhile; `release status` and
// `release show` name the code's commit in prod.
//
//	eval "$(fixtures/up.sh | grep ^export)"
//	CI=1 go test -count=1 -run TestMountedCodeRecipe -v ./cmd/release

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
)

const recipePipeline = `
name: %[1]s
registry: {url: 127.0.0.1:5000, insecure: true}
repos:
  api:  {url: %[2]s/api.git}
  site: {url: %[2]s/auth.git}
services:
  api:
    repo: api
    image: %[1]s/api
    port: 8080
    health: {http: /healthz, timeout: 30s}
    env: {CODE_DIR: /site/current}
    volumes: ["%[5]s:/site:ro"]
environments:
  prod:
    hosts: [%[3]s]
    proxy: {caddy: "http://127.0.0.1:2019", listen: {api: "%[4]s"}}
stages:
  build: {uses: docker-build, for_each: service}
  push:  {uses: docker-push, for_each: service, needs: [build]}
  code:
    uses: exec
    with:
      command: [sh, %[6]s]
      env: {CODE_REPO: site, CODE_URL: "%[2]s/auth.git", CODE_ROOT: "%[5]s"}
  deploy:
    uses: deploy
    environment: prod
    needs: [push, code]
    with: {drain: 500ms}
  refresh:
    uses: docker-exec
    environment: prod
    needs: [deploy]
    with: {service: api, command: [/api, -reload]}
`

func TestMountedCodeRecipe(t *testing.T) {
	p := newPipelineDir(t, "recipe")
	listen := parts.ListenAddr(t)
	root := filepath.Join(t.TempDir(), "site")
	script := filepath.Join(parts.Root(), "fixtures", "recipes", "checkout-code.sh")
	p.write(fmt.Sprintf(recipePipeline, p.name, p.repos, parts.DockerHost, listen, root, script))
	p.want(0, "validate")

	type started struct{ id, at string }
	container := func() started {
		t.Helper()
		out, err := exec.Command("docker", "-H", parts.DockerHost, "ps", "-q", "--no-trunc",
			"--filter", "label=release.pipeline="+p.name, "--filter", "label=release.service=api").Output()
		if err != nil {
			t.Fatalf("docker ps: %v", err)
		}
		ids := strings.Fields(string(out))
		if len(ids) != 1 {
			t.Fatalf("%d api containers run, want 1: %v", len(ids), ids)
		}
		at, err := exec.Command("docker", "-H", parts.DockerHost, "inspect", "-f", "{{.State.StartedAt}}", ids[0]).Output()
		if err != nil {
			t.Fatalf("docker inspect: %v", err)
		}
		return started{ids[0], strings.TrimSpace(string(at))}
	}
	code := func() string {
		t.Helper()
		status, body, err := getBody("http://" + listen + "/code")
		if err != nil || status != 200 {
			t.Fatalf("GET /code through Caddy: %d %q %v", status, body, err)
		}
		return strings.TrimSpace(body)
	}

	sha := p.commitFile("auth", "index.txt", "site one\n", "feat: the first page")
	p.want(0, "run", "--yes")
	if got := code(); !strings.Contains(got, "site one") {
		t.Fatalf("after the first release /code answers %q, want the first page", got)
	}
	first := container()
	wantCommit := func(want string) {
		t.Helper()
		var st statusView
		p.jsonOf(&st, "status", "prod")
		if len(st.Environments) != 1 || st.Environments[0].Commits["site"] != want {
			t.Errorf("status prod: %+v, want the code at %s", st.Environments, want)
		}
		if out := p.want(0, "status", "prod").stdout; !strings.Contains(out, want[:7]) {
			t.Errorf("release status prod does not name %s:\n%s", want[:7], out)
		}
	}
	wantCommit(sha)

	for i, page := range []string{"site two", "site three"} {
		sha := p.commitFile("auth", "index.txt", page+"\n", fmt.Sprintf("feat: page %d", i+2))
		l := startLoad("http://"+listen+"/code", 4)
		time.Sleep(300 * time.Millisecond)
		r := p.want(0, "run", "--yes")
		time.Sleep(300 * time.Millisecond)
		l.finish()
		t.Logf("release %d, through Caddy meanwhile: %s", i+2, l)
		if l.ok.Load() == 0 || l.failed.Load() > 0 {
			t.Errorf("release %d: through Caddy: %s", i+2, l)
		}
		if got := code(); !strings.Contains(got, page) {
			t.Errorf("after release %d /code answers %q, want %q", i+2, got, page)
		}
		if now := container(); now != first {
			t.Errorf("release %d: the api container is %+v, was %+v: it was replaced or restarted", i+2, now, first)
		}
		if !strings.Contains(r.stderr, "refresh") {
			t.Errorf("release %d: the run log does not show the refresh:\n%s", i+2, r.stderr)
		}
		wantCommit(sha)
		var rv runView
		p.jsonOf(&rv, "runs", "show", r.id())
		var show struct {
			Commits map[string]string `json:"commits"`
			Live    []string          `json:"live"`
		}
		p.jsonOf(&show, "show", rv.Version)
		if show.Commits["site"] != sha || !slices.Contains(show.Live, "prod") {
			t.Errorf("release show %s: commits %v, live in %v; want site at %s, live in prod", rv.Version, show.Commits, show.Live, sha)
		}
	}
}
