package main

// TestBranchEnvironments runs the real binary, Docker engine, registry,
// Caddy and bare git remotes through the environments per branch of #17:
// two instances of the template dev-* at once, each with its own network,
// in which the fixture services call each other by name (web → api → auth,
// GET /chain) and reach their own branch's builds, never the other's nor
// dev's; each instance's Caddy address skips the ports dev and a server of
// someone else hold, whose routes stay as they were; release env rm takes
// away every container, network and Caddy server it made (counted with the
// docker CLI and Caddy's admin API before and after) and nothing else, run
// twice at once from two processes; release env prune does the same for
// an instance whose branches were deleted from their remotes.
//
//	eval "$(fixtures/up.sh | grep ^export)"
//	CI=1 go test -count=1 -run TestBranchEnvironments -v ./cmd/release

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/engine"
)

const branchEnvsPipeline = `
name: %[1]s
registry: {url: 127.0.0.1:5000, insecure: true}
repos:
  auth: {url: %[2]s/auth.git}
  api:  {url: %[2]s/api.git}
  web:  {url: %[2]s/web.git}
services:
  auth: {repo: auth, image: %[1]s/auth, port: 8080, health: {http: /healthz, timeout: 30s}}
  api:
    repo: api
    image: %[1]s/api
    depends_on: [auth]
    port: 8080
    health: {http: /healthz, timeout: 30s}
    env: {UPSTREAM_URL: "http://auth:8080"}
  web:
    repo: web
    image: %[1]s/web
    depends_on: [api]
    port: 8080
    health: {http: /healthz, timeout: 30s}
    env: {UPSTREAM_URL: "http://api:8080"}
environments:
  dev:
    hosts: [%[3]s]
    proxy: {caddy: "http://127.0.0.1:2019", listen: {web: "127.0.0.1:%[4]d"}}
  dev-*:
    from: dev
    hosts: [%[3]s]
    expire: 72h
    proxy: {caddy: "http://127.0.0.1:2019", listen: {web: "127.0.0.1:%[4]d-%[5]d"}}
stages:
  build:      {uses: docker-build, for_each: service}
  push:       {uses: docker-push, for_each: service, needs: [build]}
  deploy-dev: {uses: deploy, environment: dev, needs: [push], with: {drain: 200ms}}
`

func TestBranchEnvironments(t *testing.T) {
	p := newPipelineDir(t, "branchenvs")
	low := freePorts(t, 4)
	p.write(fmt.Sprintf(branchEnvsPipeline, p.name, p.repos, parts.DockerHost, low, low+3))
	p.want(0, "validate")

	// Someone else's Caddy server on the range's second port: no instance
	// may take its address or touch its route.
	foreign := "test_foreign_" + p.name
	foreignAddr := fmt.Sprintf("127.0.0.1:%d", low+1)
	caddyPut(t, foreign, foreignAddr)
	t.Cleanup(func() { caddyDelete(foreign) })

	rel := p.want(0, "run", "--yes")
	var r runView
	p.jsonOf(&r, "runs", "show", rel.id())
	devAddr := fmt.Sprintf("127.0.0.1:%d", low)
	releaseChain := "web " + r.Version + "\napi " + r.Version + "\nauth " + r.Version + "\n"
	checkChain(t, "dev", devAddr, releaseChain)

	// Two branches, each of api and auth: their builds report the branch
	// as their version.
	for _, b := range []string{"a", "b"} {
		for _, svc := range []string{"api", "auth"} {
			branchDockerfile(t, p.repos, svc, "feature/"+b, "branch-"+b)
		}
	}
	for _, b := range []string{"a", "b"} {
		p.want(0, "deploy", "dev-"+b, "--ref", "api=feature/"+b, "--ref", "auth=feature/"+b, "--yes")
	}

	var list envListView
	p.jsonOf(&list, "env", "list")
	if len(list.Environments) != 2 {
		t.Fatalf("env list: %+v, want dev-a and dev-b", list.Environments)
	}
	listen := map[string]string{}
	for i, in := range list.Environments {
		name := "dev-" + []string{"a", "b"}[i]
		if in.Name != name || in.Template != "dev-*" || in.Network != "release-"+p.name+"-"+name || in.DeployedAt == nil || in.Expires == nil ||
			in.Refs["api"] != "feature/"+name[4:] || in.Refs["auth"] != "feature/"+name[4:] || len(in.Commits["api"]) != 40 {
			t.Errorf("env list [%d]: %+v", i, in)
		}
		listen[name] = in.Listen["web"]
	}
	// dev holds the first port, the foreign server the second.
	wantListen := map[string]string{"dev-a": fmt.Sprintf("127.0.0.1:%d", low+2), "dev-b": fmt.Sprintf("127.0.0.1:%d", low+3)}
	if diff := cmp.Diff(wantListen, listen); diff != "" {
		t.Errorf("the instances' listen addresses (-want +got):\n%s", diff)
	}
	text := p.want(0, "env", "list").stdout
	if !strings.Contains(text, "dev-a\tdev-*\tapi=feature/a@") || !strings.Contains(text, "\trelease-"+p.name+"-dev-b\tweb="+wantListen["dev-b"]+"\n") {
		t.Errorf("env list:\n%s", text)
	}

	var st statusView
	p.jsonOf(&st, "status", "dev-a")
	if len(st.Environments) != 1 || st.Environments[0].Template != "dev-*" || st.Environments[0].Listen["web"] != wantListen["dev-a"] || len(st.Environments[0].Services) != 3 {
		t.Fatalf("status dev-a: %+v", st)
	}
	for _, s := range st.Environments[0].Services {
		if !s.Healthy || s.Drift != "" {
			t.Errorf("status dev-a: %+v, want healthy without drift", s)
		}
	}
	p.want(0, "status")

	// Each instance's web calls api and api calls auth by name on its own
	// network: its own branch's builds answer.
	for _, b := range []string{"a", "b"} {
		checkChain(t, "dev-"+b, listen["dev-"+b], "web "+r.Version+"\napi branch-"+b+"\nauth branch-"+b+"\n")
	}
	checkChain(t, "dev", devAddr, releaseChain)
	checkForeign(t, foreignAddr)

	before := map[string]made{}
	for _, env := range []string{"dev", "dev-a", "dev-b"} {
		before[env] = madeIn(t, p.name, env)
		if len(before[env].containers) != 3 || len(before[env].networks) != 1 || len(before[env].servers) != 1 {
			t.Errorf("%s before env rm: %d containers, networks %v, Caddy servers %v; want 3, 1, 1", env, len(before[env].containers), before[env].networks, before[env].servers)
		}
	}

	var rm envRmView
	p.jsonOf(&rm, "env", "rm", "dev-a")
	want := engine.Removed{Networks: []string{"release-" + p.name + "-dev-a on " + parts.DockerHost}, Routes: []string{"release_" + p.name + "_dev-a_web"}}
	for _, c := range before["dev-a"].containers {
		want.Containers = append(want.Containers, c+" on "+parts.DockerHost)
	}
	slices.Sort(want.Containers)
	if diff := cmp.Diff(want, rm.Removed); diff != "" || rm.Gone {
		t.Errorf("env rm dev-a: gone %v, removed (-want +got):\n%s", rm.Gone, diff)
	}
	if got := madeIn(t, p.name, "dev-a"); len(got.containers)+len(got.networks)+len(got.servers) > 0 {
		t.Errorf("after env rm dev-a, left: %+v", got)
	}
	for _, env := range []string{"dev", "dev-b"} {
		if diff := cmp.Diff(before[env], madeIn(t, p.name, env), cmp.AllowUnexported(made{})); diff != "" {
			t.Errorf("env rm dev-a changed %s (-before +after):\n%s", env, diff)
		}
	}
	checkChain(t, "dev-b", listen["dev-b"], "web "+r.Version+"\napi branch-b\nauth branch-b\n")
	checkChain(t, "dev", devAddr, releaseChain)
	checkForeign(t, foreignAddr)

	// Twice at once, from two processes: both finish, nothing is left.
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = p.release("env", "rm", "dev-b")
		}()
	}
	wg.Wait()
	for i, res := range results {
		if res.code != 0 {
			t.Errorf("env rm dev-b at once [%d]: %s", i, res)
		}
	}
	if got := madeIn(t, p.name, "dev-b"); len(got.containers)+len(got.networks)+len(got.servers) > 0 {
		t.Errorf("after env rm dev-b twice at once, left: %+v", got)
	}
	p.jsonOf(&list, "env", "list")
	if len(list.Environments) != 0 {
		t.Errorf("env list after both rm: %+v", list.Environments)
	}
	if diff := cmp.Diff(before["dev"], madeIn(t, p.name, "dev"), cmp.AllowUnexported(made{})); diff != "" {
		t.Errorf("the removals changed dev (-before +after):\n%s", diff)
	}
	checkChain(t, "dev", devAddr, releaseChain)
	checkForeign(t, foreignAddr)

	// prune: an instance all of whose branches are gone from their
	// remotes goes the same way.
	p.want(0, "deploy", "dev-c", "--ref", "api=feature/a", "--ref", "auth=feature/a", "--yes")
	if got := madeIn(t, p.name, "dev-c"); len(got.containers) != 3 || len(got.networks) != 1 || len(got.servers) != 1 {
		t.Errorf("dev-c: %+v", got)
	}
	if pr := p.want(0, "env", "prune"); pr.stdout != "" {
		t.Errorf("env prune with every branch there: %s", pr)
	}
	for _, svc := range []string{"api", "auth"} {
		if out, err := exec.Command("git", "--git-dir", filepath.Join(p.repos, svc+".git"), "branch", "-D", "feature/a").CombinedOutput(); err != nil {
			t.Fatalf("delete feature/a of %s: %v\n%s", svc, err, out)
		}
	}
	if pr := p.want(0, "env", "prune"); !strings.HasPrefix(pr.stdout, "dev-c: its branches are gone: api=feature/a, auth=feature/a\n") || !strings.HasSuffix(pr.stdout, "dev-c: removed\n") {
		t.Errorf("env prune once feature/a is gone: %s", pr)
	}
	if got := madeIn(t, p.name, "dev-c"); len(got.containers)+len(got.networks)+len(got.servers) > 0 {
		t.Errorf("after env prune, dev-c left: %+v", got)
	}

	again := p.want(0, "env", "rm", "dev-a")
	if again.stdout != "dev-a: no record (removed before)\n" {
		t.Errorf("env rm dev-a again: %s", again)
	}
	if res := p.release("env", "rm", "dev"); res.code != exitUsage || !strings.Contains(res.stderr, "dev is an environment of the pipeline file") {
		t.Errorf("env rm dev: %s", res)
	}
}

// freePorts finds n consecutive ports of 127.0.0.1 nothing listens on,
// below the ephemeral range (see parts.ListenAddr), and returns the first.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 1000 {
		low := 10000 + rand.IntN(20000)
		free := true
		for port := low; port < low+n && free; port++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return low
		}
	}
	t.Fatalf("no %d free consecutive ports", n)
	return 0
}

// branchDockerfile pushes branch of the fixture repo svc, from main, with
// the image's SERVICE_VERSION set to version.
func branchDockerfile(t *testing.T, repos, svc, branch, version string) {
	t.Helper()
	work := filepath.Join(repos, "work", svc)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=Fixture Dev", "-c", "user.email=dev@sweepboard.test", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), work, err, out)
		}
	}
	git("checkout", "-q", "-B", branch, "main")
	df, err := os.ReadFile(filepath.Join(work, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(df), "ENV SERVICE_VERSION=$RELEASE_VERSION", "ENV SERVICE_VERSION="+version, 1)
	if s == string(df) {
		t.Fatal("the fixture Dockerfile sets no SERVICE_VERSION=$RELEASE_VERSION: update branchDockerfile")
	}
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	git("commit", "-q", "-am", "feat: "+svc+" on "+branch)
	git("push", "-q", "origin", branch)
	git("checkout", "-q", "main")
}

// checkChain GETs /chain through Caddy at addr: web, then api, then auth,
// each called by name on the environment's network.
func checkChain(t *testing.T, env, addr, want string) {
	t.Helper()
	code, body, err := getBody("http://" + addr + "/chain")
	if err != nil || code != http.StatusOK || body != want {
		t.Errorf("%s: GET %s/chain: %d %v\n%s\nwant:\n%s", env, addr, code, err, body, want)
	}
}

func checkForeign(t *testing.T, addr string) {
	t.Helper()
	code, body, err := getBody("http://" + addr + "/")
	if err != nil || code != http.StatusOK || body != "foreign\n" {
		t.Errorf("the foreign Caddy server on %s: %d %q %v, want its own answer", addr, code, body, err)
	}
}

// made is what release made for one environment, as the docker CLI and
// Caddy's admin API list it.
type made struct {
	containers, networks, servers []string
}

func madeIn(t *testing.T, pipe, env string) made {
	t.Helper()
	docker := func(args ...string) []string {
		t.Helper()
		out, err := exec.Command("docker", append([]string{"-H", parts.DockerHost}, args...)...).Output()
		if err != nil {
			t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
		}
		f := strings.Fields(string(out))
		slices.Sort(f)
		return f
	}
	filters := []string{"--filter", "label=release.pipeline=" + pipe, "--filter", "label=release.environment=" + env}
	m := made{
		containers: docker(append([]string{"ps", "-a", "--format", "{{.Names}}"}, filters...)...),
		networks:   docker(append([]string{"network", "ls", "--format", "{{.Name}}"}, filters...)...),
	}
	resp, err := http.Get("http://127.0.0.1:2019/config/apps/http/servers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var servers map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&servers); err != nil {
		t.Fatal(err)
	}
	prefix := "release_" + pipe + "_" + env + "_"
	for id := range servers {
		if rest, ok := strings.CutPrefix(id, prefix); ok && !strings.Contains(rest, "_") {
			m.servers = append(m.servers, id)
		}
	}
	slices.Sort(m.servers)
	return m
}

// caddyPut makes a Caddy server that answers "foreign" on addr.
func caddyPut(t *testing.T, id, addr string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"listen": []string{addr},
		"routes": []any{map[string]any{"handle": []any{map[string]any{"handler": "static_response", "body": "foreign\n"}}}},
	})
	req, _ := http.NewRequest(http.MethodPut, "http://127.0.0.1:2019/config/apps/http/servers/"+id, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT Caddy server %s: %s", id, resp.Status)
	}
}

func caddyDelete(id string) {
	req, _ := http.NewRequest(http.MethodDelete, "http://127.0.0.1:2019/config/apps/http/servers/"+id, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}
