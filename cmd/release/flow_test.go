package main

// TestFlow runs the real binary through the release lifecycle of
// pipeline.example.yaml on the fixture services, against the real parts
// fixtures/up.sh starts (the Docker engine, the registry on 127.0.0.1:5000,
// Caddy's admin API on 127.0.0.1:2019) and the fake GitHub API in this
// process. The subtests share one pipeline and run in order, each starting
// from where the one before left the environments:
//
//	whole-flow          release run --yes: build, push, dev, staging, tag, prod, notes
//	never-reached-dev   promote of a version dev never ran: refused, nothing changes
//	second-release      a second release reaches staging, not prod; rollback staging
//	concurrent-promote  two promotes at once, 20 times: one deploys, one exits 4
//	kill-and-resume     SIGKILL mid-deploy, the lease lapses, resume finishes it
//
// As root:
//
//	eval "$(fixtures/up.sh)"
//	go test -count=1 -timeout 20m -run TestFlow ./cmd/release

import (
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
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// flowServices are the fixture services of pipeline.example.yaml.
var flowServices = []string{"api", "auth", "web"}

// needFlowParts fails the test when CI is set and a real part is missing,
// and skips it otherwise.
func needFlowParts(t *testing.T) {
	t.Helper()
	missing := func(part string, err error) {
		t.Helper()
		msg := fmt.Sprintf("%s: %v (run fixtures/up.sh)", part, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so fixtures/up.sh must have started it")
		}
		t.Skip(msg)
	}
	for _, tool := range []string{"docker", "git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool, err)
		}
	}
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		missing("docker engine", fmt.Errorf("%v: %s", err, bytes.TrimSpace(out)))
	}
	c := http.Client{Timeout: 5 * time.Second}
	for part, url := range map[string]string{
		"registry 127.0.0.1:5000": "http://127.0.0.1:5000/v2/",
		"caddy admin API":         "http://127.0.0.1:2019/config/",
	} {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s", url, resp.Status)
			}
		}
		if err != nil {
			missing(part, err)
		}
	}
}

// flow is one pipeline of the fixture services in a directory of its own:
// its own name (so containers, images and Caddy servers are its own), its
// own Caddy listen ports, its own repos, store and fake GitHub.
type flow struct {
	t     *testing.T
	bin   string
	dir   string
	name  string
	token string
	gh    *fakegithub.Server
	state string // RELEASE_STATE for the binary; "" for the default SQLite file
	// listen are the Caddy listen addresses of the file, by environment
	// and service ("staging/web").
	listen map[string]string
}

type result struct {
	stdout, stderr string
	code           int
}

// resultOf is what a finished `release ARGS` printed and its exit code;
// err is what waiting for it returned. It fails the test when the command
// did not run to an exit.
func resultOf(tb testing.TB, args []string, err error, stdout, stderr *bytes.Buffer) result {
	tb.Helper()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		tb.Fatalf("release %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// id is the run id a command printed first.
func (r result) id() string {
	first, _, _ := strings.Cut(r.stdout, "\n")
	return strings.TrimSpace(first)
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	listenAddr = regexp.MustCompile(`"127\.0\.0\.1:9[0-9]{3}"`)
	apiURLLine = regexp.MustCompile(`api_url: "[^"]*"`)
)

// newFlow copies pipeline.example.yaml into a new directory, renamed to
// prefix plus the process id, with its Caddy listen addresses on free
// ports and its github.api_url on a fake GitHub API, and makes the fixture
// repos next to it.
func newFlow(t *testing.T, prefix string) *flow {
	t.Helper()
	needFlowParts(t)
	root := moduleRoot(t)
	f := &flow{
		t:     t,
		bin:   buildRelease(t),
		dir:   t.TempDir(),
		name:  fmt.Sprintf("%s%d", prefix, os.Getpid()),
		token: fmt.Sprintf("flow-token-%d", time.Now().UnixNano()),
	}
	f.gh = fakegithub.New(f.token)
	apiURL := f.gh.Start(t)

	src, err := os.ReadFile(filepath.Join(root, "pipeline.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	y := string(src)
	edit := func(what, old, new string) {
		t.Helper()
		if !strings.Contains(y, old) {
			t.Fatalf("pipeline.example.yaml has no %q: update newFlow (%s)", old, what)
		}
		y = strings.ReplaceAll(y, old, new)
	}
	edit("name", "\nname: sweepboard\n", "\nname: "+f.name+"\n")
	edit("images", "image: sweepboard/", "image: "+f.name+"/")
	if !apiURLLine.MatchString(y) {
		t.Fatal("pipeline.example.yaml has no github api_url: update newFlow")
	}
	y = apiURLLine.ReplaceAllString(y, `api_url: "`+apiURL+`"`)
	// In the file's order: staging's auth, api and web, then prod's.
	slots := []string{"staging/auth", "staging/api", "staging/web", "prod/auth", "prod/api", "prod/web"}
	f.listen = map[string]string{}
	n := 0
	y = listenAddr.ReplaceAllStringFunc(y, func(string) string {
		addr := parts.ListenAddr(t)
		if n < len(slots) {
			f.listen[slots[n]] = addr
		}
		n++
		return `"` + addr + `"`
	})
	if n != 6 {
		t.Fatalf("pipeline.example.yaml has %d Caddy listen addresses 127.0.0.1:9xxx, want 6: update newFlow", n)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(root, "fixtures", "mkrepos.sh"), filepath.Join(f.dir, "repos")).CombinedOutput(); err != nil {
		t.Fatalf("fixtures/mkrepos.sh: %v\n%s", err, out)
	}
	// Subtests swap f.t; the cleanup logs to the test that made f.
	t.Cleanup(func() { f.t = t; f.cleanup() })
	f.cleanup() // what a killed earlier run of this process id left
	if r := f.release("validate"); r.code != 0 {
		t.Fatalf("validate the flow's pipeline file:\n%s", r)
	}
	return f
}

// cleanup removes the flow's containers, Caddy servers and local images.
func (f *flow) cleanup() {
	if ids := f.docker("ps", "-aq", "--filter", "label=release.pipeline="+f.name); ids != "" {
		f.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	// The environment networks too: the engine has some thirty address
	// pools, and networks left behind by earlier runs use them up.
	if ids := f.docker("network", "ls", "-q", "--filter", "label=release.pipeline="+f.name); ids != "" {
		f.docker(append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	for _, env := range []string{"staging", "prod"} {
		for _, svc := range flowServices {
			req, _ := http.NewRequest(http.MethodDelete, "http://127.0.0.1:2019/config/apps/http/servers/release_"+f.name+"_"+env+"_"+svc, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}
	for _, ref := range []string{f.name + "/*", "127.0.0.1:5000/" + f.name + "/*"} {
		if ids := f.docker("images", "-q", "--filter", "reference="+ref); ids != "" {
			f.docker(append([]string{"rmi", "-f"}, strings.Fields(ids)...)...)
		}
	}
}

// getChain GETs /chain at addr (for up to 10 s while it does not answer
// 200) and returns the body, or the last error as text.
func getChain(t *testing.T, addr string) string {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := hc.Get("http://" + addr + "/chain")
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return string(body)
		}
		last = fmt.Sprintf("%s: %s", resp.Status, body)
	}
	return last
}

// docker runs the docker CLI; errors are the caller's to see in the output.
func (f *flow) docker(args ...string) string {
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		f.t.Logf("docker %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// env is the environment of the binary: the test's, without the
// variables that would point it elsewhere, with the GitHub token.
func (f *flow) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RELEASE_") || strings.HasPrefix(kv, "GITHUB_TOKEN=") || strings.HasPrefix(kv, "NO_COLOR=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GITHUB_TOKEN="+f.token, "NO_COLOR=1", "RELEASE_USER=flow-test")
	if f.state != "" {
		env = append(env, "RELEASE_STATE="+f.state)
	}
	return env
}

func (f *flow) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, f.bin, append([]string{"-f", "pipeline.yaml"}, args...)...)
	cmd.Dir, cmd.Env = f.dir, f.env()
	return cmd
}

// release runs the binary to its end.
func (f *flow) release(args ...string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := f.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := resultOf(f.t, args, err, &stdout, &stderr)
	if testing.Verbose() {
		f.t.Logf("release %s: exit %d in %v", strings.Join(args, " "), r.code, time.Since(start).Round(time.Millisecond))
	}
	return r
}

// mustRelease runs the binary and fails the test unless it exits 0.
func (f *flow) mustRelease(args ...string) result {
	f.t.Helper()
	r := f.release(args...)
	if r.code != 0 {
		f.t.Fatalf("release %s:\n%s", strings.Join(args, " "), r)
	}
	return r
}

func (f *flow) jsonOf(v any, args ...string) {
	f.t.Helper()
	r := f.mustRelease(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		f.t.Fatalf("release %s -o json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

func (f *flow) run(id string) runView {
	f.t.Helper()
	var v runView
	f.jsonOf(&v, "runs", "show", id)
	return v
}

func (f *flow) status() statusView {
	f.t.Helper()
	var v statusView
	f.jsonOf(&v, "status")
	return v
}

func (f *flow) runs() []runSummary {
	f.t.Helper()
	var v []runSummary
	f.jsonOf(&v, "runs", "list", "-n", "0")
	return v
}

// box is one container of the flow as docker inspect shows it.
type box struct {
	ID      string
	Name    string
	Running bool
	ImageID string
	Digest  string   // the release.digest label
	Repo    []string // the RepoDigests of the image it runs
}

// containers lists every container (running or not) of env, by service.
func (f *flow) containers(env string) map[string][]box {
	f.t.Helper()
	got := map[string][]box{}
	ids := strings.Fields(f.docker("ps", "-aq", "--filter", "label=release.pipeline="+f.name, "--filter", "label=release.environment="+env))
	if len(ids) == 0 {
		return got
	}
	var inspected []struct {
		ID     string `json:"Id"`
		Name   string
		Image  string
		State  struct{ Running bool }
		Config struct {
			Labels map[string]string
		}
	}
	if err := json.Unmarshal([]byte(f.docker(append([]string{"inspect"}, ids...)...)), &inspected); err != nil {
		f.t.Fatalf("docker inspect: %v", err)
	}
	for _, c := range inspected {
		var images []struct{ RepoDigests []string }
		if err := json.Unmarshal([]byte(f.docker("image", "inspect", c.Image)), &images); err != nil || len(images) != 1 {
			f.t.Fatalf("docker image inspect %s: %v", c.Image, err)
		}
		svc := c.Config.Labels["release.service"]
		got[svc] = append(got[svc], box{
			ID: c.ID, Name: strings.TrimPrefix(c.Name, "/"), Running: c.State.Running, ImageID: c.Image,
			Digest: c.Config.Labels["release.digest"], Repo: images[0].RepoDigests,
		})
	}
	return got
}

// checkRunning checks that env runs exactly one container per service, at
// the digest of images, and returns the image id of each.
func (f *flow) checkRunning(env string, images map[string]string) map[string]string {
	f.t.Helper()
	ids := map[string]string{}
	got := f.containers(env)
	for _, svc := range flowServices {
		boxes := got[svc]
		if len(boxes) != 1 {
			f.t.Errorf("%s: %d containers of %s, want 1: %+v", env, len(boxes), svc, boxes)
			continue
		}
		b := boxes[0]
		if !b.Running {
			f.t.Errorf("%s: container %s of %s is not running", env, b.Name, svc)
		}
		if !slices.Contains(b.Repo, images[svc]) {
			f.t.Errorf("%s: %s runs image %s with repo digests %v, want %s", env, svc, b.ImageID, b.Repo, images[svc])
		}
		if b.Digest != images[svc] {
			f.t.Errorf("%s: %s is labelled %s, want %s", env, svc, b.Digest, images[svc])
		}
		ids[svc] = b.ImageID
	}
	if len(got) != len(flowServices) {
		f.t.Errorf("%s: containers of services %v, want %v", env, sortedKeys(got), flowServices)
	}
	return ids
}

// checkStatus checks that release status shows env on version with the
// digests of images, healthy and without drift.
func (f *flow) checkStatus(st statusView, env, version string, images map[string]string) {
	f.t.Helper()
	for _, e := range st.Environments {
		if e.Name != env {
			continue
		}
		if e.Version != version {
			f.t.Errorf("status: %s is on %q, want %s", env, e.Version, version)
		}
		got := map[string]string{}
		for _, s := range e.Services {
			got[s.Name] = s.Digest
			if !s.Healthy || s.Drift != "" {
				f.t.Errorf("status: %s %s healthy=%v drift=%q", env, s.Name, s.Healthy, s.Drift)
			}
		}
		if diff := cmp.Diff(images, got); diff != "" {
			f.t.Errorf("status: digests of %s (-want +got):\n%s", env, diff)
		}
		return
	}
	f.t.Errorf("status shows no environment %s", env)
}

// tags lists the tags of a bare repo with the commit each points to.
func (f *flow) tags(repo string) map[string]string {
	f.t.Helper()
	out, err := exec.Command("git", "ls-remote", "--tags", filepath.Join(f.dir, "repos", repo+".git")).Output()
	if err != nil {
		f.t.Fatalf("git ls-remote --tags %s: %v", repo, err)
	}
	tags := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		sha, ref, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		// An annotated tag is listed twice; ^{} is the commit it points to.
		if name, peeled := strings.CutSuffix(strings.TrimPrefix(ref, "refs/tags/"), "^{}"); peeled || tags[name] == "" {
			tags[name] = sha
		}
	}
	return tags
}

// tagCommit is what git rev-parse TAG^{commit} says in a bare repo.
func (f *flow) tagCommit(repo, tag string) string {
	f.t.Helper()
	out, err := exec.Command("git", "--git-dir", filepath.Join(f.dir, "repos", repo+".git"), "rev-parse", tag+"^{commit}").Output()
	if err != nil {
		f.t.Fatalf("git rev-parse %s^{commit} in %s: %v", tag, repo, err)
	}
	return strings.TrimSpace(string(out))
}

// snapshot is everything a refused command must leave as it was.
type snapshot struct {
	Status     statusView
	Containers map[string][]string // container ids by environment
	Runs       int
	Tags       map[string]map[string]string
	Releases   map[string]int
}

func (f *flow) snapshot() snapshot {
	f.t.Helper()
	s := snapshot{Status: f.status(), Containers: map[string][]string{}, Runs: len(f.runs()),
		Tags: map[string]map[string]string{}, Releases: map[string]int{}}
	for _, env := range []string{"dev", "staging", "prod"} {
		for _, boxes := range f.containers(env) {
			for _, b := range boxes {
				s.Containers[env] = append(s.Containers[env], b.ID)
			}
		}
		slices.Sort(s.Containers[env])
	}
	for _, repo := range flowServices {
		s.Tags[repo] = f.tags(repo)
		s.Releases[repo] = len(f.gh.Releases("sweepboard", repo))
	}
	return s
}

// nodeWindow is when a run's node ran, from the state store.
type nodeWindow struct {
	run        string
	start, end time.Time
}

// nodeWindows reads the start and end of node in each run from the store.
func (f *flow) nodeWindows(node string, runIDs []string) []nodeWindow {
	f.t.Helper()
	ctx := context.Background()
	dsn := f.state
	if dsn == "" {
		dsn = filepath.Join(f.dir, ".release", "state.db")
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		f.t.Fatal(err)
	}
	defer st.Close()
	var out []nodeWindow
	for _, id := range runIDs {
		r, err := st.Run(ctx, id)
		if err != nil {
			f.t.Fatal(err)
		}
		n := r.Node(node)
		if n == nil || n.StartedAt == nil || n.FinishedAt == nil {
			f.t.Fatalf("run %s: node %s has no start or end: %+v", id, node, n)
		}
		out = append(out, nodeWindow{run: id, start: *n.StartedAt, end: *n.FinishedAt})
	}
	slices.SortFunc(out, func(a, b nodeWindow) int { return a.start.Compare(b.start) })
	return out
}

func TestFlow(t *testing.T) {
	f := newFlow(t, "flow")
	var first, second runView

	ok := t.Run("whole-flow", func(t *testing.T) {
		f.t = t
		r := f.mustRelease("run", "--yes")
		first = f.run(r.id())
		if first.Status != "succeeded" || first.Version == "" {
			t.Fatalf("run %s: status %s, version %q\n%s", first.ID, first.Status, first.Version, r)
		}
		if diff := cmp.Diff(flowServices, sortedKeys(first.Images)); diff != "" {
			t.Fatalf("images of the release (-want +got):\n%s", diff)
		}

		// dev, staging and prod run the same images, by digest.
		dev := f.checkRunning("dev", first.Images)
		for _, env := range []string{"staging", "prod"} {
			if diff := cmp.Diff(dev, f.checkRunning(env, first.Images)); diff != "" {
				t.Errorf("image ids in %s differ from dev (-dev +%s):\n%s", env, env, diff)
			}
		}

		// Every repo carries the version tag at the pinned commit, and
		// has one GitHub release of it.
		tag := "v" + first.Version
		for _, repo := range flowServices {
			if got := f.tagCommit(repo, tag); got != first.Commits[repo] {
				t.Errorf("%s: %s is at %s, the run pinned %s", repo, tag, got, first.Commits[repo])
			}
			if diff := cmp.Diff([]string{tag}, sortedKeys(f.tags(repo))); diff != "" {
				t.Errorf("%s: tags (-want +got):\n%s", repo, diff)
			}
			rels := f.gh.Releases("sweepboard", repo)
			if len(rels) != 1 {
				t.Errorf("%s: %d GitHub releases, want 1: %+v", repo, len(rels), rels)
				continue
			}
			if rels[0].TagName != tag || rels[0].Draft {
				t.Errorf("%s: GitHub release %s (draft %v), want %s published", repo, rels[0].TagName, rels[0].Draft, tag)
			}
		}

		// The registry says the same: :dev, :staging and :prod are the
		// release's digests, tagged registry-side.
		for _, svc := range flowServices {
			for _, env := range []string{"dev", "staging", "prod"} {
				if got, want := registryDigest(t, first.Images[svc], env), digestOf(first.Images[svc]); got != want {
					t.Errorf("%s:%s is %s in the registry, want %s", svc, env, got, want)
				}
			}
		}

		st := f.status()
		if got := len(st.Environments); got != 3 {
			t.Errorf("status shows %d environments, want 3", got)
		}
		for _, env := range []string{"dev", "staging", "prod"} {
			f.checkStatus(st, env, first.Version, first.Images)
		}

		// Through each environment's Caddy, web calls api and api calls
		// auth by their names on the environment network.
		want := fmt.Sprintf("web %[1]s\napi %[1]s\nauth %[1]s\n", first.Version)
		for _, env := range []string{"staging", "prod"} {
			if got := getChain(t, f.listen[env+"/web"]); got != want {
				t.Errorf("GET /chain through %s's Caddy: %q, want %q", env, got, want)
			}
		}

		// The approval given up front is recorded as such.
		for _, n := range first.Stages {
			if n.ID == "approve-prod" && (n.Approval == nil || n.Status != "succeeded") {
				t.Errorf("approve-prod: status %s, approval %+v", n.Status, n.Approval)
			}
		}
	})
	if !ok {
		t.Fatal("the whole flow failed; the other subtests build on it")
	}

	t.Run("never-reached-dev", func(t *testing.T) {
		f.t = t
		before := f.snapshot()
		for _, args := range [][]string{
			{"promote", "staging", "--version", "0.99.0"},
			{"promote", "prod", "--version", "0.99.0", "--yes"},
		} {
			r := f.release(args...)
			t.Logf("release %s: %s", strings.Join(args, " "), strings.TrimSpace(r.stderr))
			from := map[string]string{"staging": "dev", "prod": "staging"}[args[1]]
			want := "version 0.99.0 never reached " + from
			if r.code != exitError || !strings.Contains(r.stderr, want) {
				t.Errorf("release %s: want exit %d and %q on stderr, got\n%s", strings.Join(args, " "), exitError, want, r)
			}
			if r.stdout != "" {
				t.Errorf("release %s printed a run id or data: %q", strings.Join(args, " "), r.stdout)
			}
		}
		if diff := cmp.Diff(before, f.snapshot()); diff != "" {
			t.Errorf("a refused promote changed something (-before +after):\n%s", diff)
		}
	})

	ok = t.Run("second-release", func(t *testing.T) {
		f.t = t
		sha := strings.TrimSpace(runOut(t, filepath.Join(moduleRoot(t), "fixtures", "mkrepos.sh"), filepath.Join(f.dir, "repos"), "commit", "api", "feat: x"))
		// Without --yes the run stops at prod's approval gate: staging
		// gets the second release, prod keeps the first.
		r := f.release("run")
		if r.code != exitWaiting {
			t.Fatalf("release run without --yes: want exit %d at prod's gate, got\n%s", exitWaiting, r)
		}
		second = f.run(r.id())
		if second.Version == first.Version || second.Commits["api"] != sha {
			t.Fatalf("second release: version %s (first %s), api at %s (want %s)", second.Version, first.Version, second.Commits["api"], sha)
		}
		if second.Images["api"] == first.Images["api"] {
			t.Fatalf("the api image did not change: %s", second.Images["api"])
		}
		f.checkRunning("dev", second.Images)
		f.checkRunning("staging", second.Images)
		f.checkRunning("prod", first.Images)
		st := f.status()
		f.checkStatus(st, "staging", second.Version, second.Images)
		f.checkStatus(st, "prod", first.Version, first.Images)
		for _, repo := range flowServices {
			if diff := cmp.Diff([]string{"v" + first.Version}, sortedKeys(f.tags(repo))); diff != "" {
				t.Errorf("%s: tags before prod's approval (-want +got):\n%s", repo, diff)
			}
		}

		r = f.mustRelease("rollback", "staging")
		back := f.run(r.id())
		if back.Kind != "rollback" || back.Version != first.Version || back.Status != "succeeded" {
			t.Errorf("rollback run: kind %s, version %s, status %s; want rollback of %s, succeeded", back.Kind, back.Version, back.Status, first.Version)
		}
		if diff := cmp.Diff(first.Images, back.Images); diff != "" {
			t.Errorf("rollback images (-first +rollback):\n%s", diff)
		}
		f.checkRunning("staging", first.Images)
		f.checkRunning("dev", second.Images)
		f.checkRunning("prod", first.Images)
		st = f.status()
		f.checkStatus(st, "staging", first.Version, first.Images)
		f.checkStatus(st, "dev", second.Version, second.Images)
		f.checkStatus(st, "prod", first.Version, first.Images)
		for _, svc := range flowServices {
			if got, want := registryDigest(t, first.Images[svc], "staging"), digestOf(first.Images[svc]); got != want {
				t.Errorf("after the rollback %s:staging is %s in the registry, want the first release's %s", svc, got, want)
			}
		}
	})
	if !ok {
		t.Fatal("the second release failed; the other subtests build on it")
	}

	t.Run("concurrent-promote", func(t *testing.T) {
		f.t = t
		f.promoteRace(t, 20, second)
	})

	t.Run("kill-and-resume", func(t *testing.T) {
		f.t = t
		// staging runs the second release; promote the first back into
		// it and kill the promote once a new container started.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := f.command(ctx, "promote", "staging", "--version", first.Version, "-v")
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		started := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), ": started "+f.name+"-staging-") {
					select {
					case started <- sc.Text():
					default:
					}
				}
			}
			io.Copy(io.Discard, stderr)
			close(started)
		}()
		var line string
		select {
		case line = <-started:
		case <-time.After(3 * time.Minute):
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		for range started { // until the reader has seen the end
		}
		cmd.Wait()
		if line == "" {
			t.Fatalf("the promote never started a container:\n%s", log.String())
		}
		id := strings.TrimSpace(stdout.String())
		t.Logf("killed run %s after %q", id, line)

		// The lease outlives the process until it lapses: a promote now
		// is refused naming the killed run.
		if r := f.release("promote", "staging"); r.code != exitLocked || !strings.Contains(r.stderr, "locked by run "+id) {
			t.Errorf("promote right after the kill: want exit %d naming %s, got\n%s", exitLocked, id, r)
		}
		lapsed := f.waitLease("env/staging", killed)
		t.Logf("the lease of the killed run lapsed %v after the kill (TTL %v)", lapsed.Round(100*time.Millisecond), pipeline.DefaultLeaseTTL)
		if lapsed > pipeline.DefaultLeaseTTL+2*time.Second {
			t.Errorf("the lease of the killed run lapsed %v after the kill, want within its TTL %v", lapsed, pipeline.DefaultLeaseTTL)
		}

		f.mustRelease("resume", id)
		v := f.run(id)
		if v.Status != "succeeded" || v.Version != first.Version {
			t.Errorf("resumed run: status %s, version %s; want succeeded, %s", v.Status, v.Version, first.Version)
		}
		f.checkRunning("staging", first.Images)
		f.checkStatus(f.status(), "staging", first.Version, first.Images)
		f.checkRunning("prod", first.Images)
		f.checkRunning("dev", second.Images)
	})
}

// waitLease waits until the named lease can be taken, takes it and gives it
// back at once, and returns how long after since that was.
func (f *flow) waitLease(name string, since time.Time) time.Duration {
	f.t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(f.dir, ".release", "state.db"))
	if err != nil {
		f.t.Fatal(err)
	}
	defer st.Close()
	deadline := since.Add(2 * pipeline.DefaultLeaseTTL)
	for {
		l, err := st.AcquireLease(ctx, name, "flow-test-probe", time.Second)
		if err == nil {
			at := time.Since(since)
			if err := st.ReleaseLease(ctx, l); err != nil {
				f.t.Fatal(err)
			}
			return at
		}
		var held *pipeline.HeldError
		if !errors.As(err, &held) {
			f.t.Fatal(err)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("lease %s still held %v after the kill: %v", name, time.Since(since), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func runOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out)
}

// registryDigest returns the digest the registry gives for tag in the
// repository of ref ("127.0.0.1:5000/x/api@sha256:…").
func registryDigest(t *testing.T, ref, tag string) string {
	t.Helper()
	resp := headManifest(t, ref, tag)
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// headManifest is the registry's answer to a HEAD of the manifest named
// reference (a tag or a digest) in the repository of ref; its body is closed.
func headManifest(t *testing.T, ref, reference string) *http.Response {
	t.Helper()
	repo, _, _ := strings.Cut(ref, "@")
	host, path, _ := strings.Cut(repo, "/")
	req, err := http.NewRequest(http.MethodHead, "http://"+host+"/v2/"+path+"/manifests/"+reference, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func digestOf(ref string) string {
	_, d, _ := strings.Cut(ref, "@")
	return d
}

// promoteRace starts two `release promote staging` together, rounds times:
// each time exactly one deploys and the other exits 4 naming it (or, when
// a no-op promote ended before the other started, both deploy one after
// the other); then a few rounds with --wait. No two deploys of staging may
// overlap, read from the store. Staging ends on want.
func (f *flow) promoteRace(t *testing.T, rounds int, want runView) {
	var winners []string
	race := func(round int, wait bool) []result {
		args := []string{"promote", "staging"}
		if wait {
			args = append(args, "--wait")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmds := make([]*exec.Cmd, 2)
		outs := make([][2]bytes.Buffer, 2)
		for i := range cmds {
			cmds[i] = f.command(ctx, args...)
			cmds[i].Stdout, cmds[i].Stderr = &outs[i][0], &outs[i][1]
		}
		for _, c := range cmds {
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}
		res := make([]result, 2)
		for i, c := range cmds {
			err := c.Wait()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("round %d: %v", round, err)
			}
			res[i] = result{stdout: outs[i][0].String(), stderr: outs[i][1].String(), code: c.ProcessState.ExitCode()}
		}
		return res
	}

	// Started together, the two either meet at the lease (one deploys,
	// the other exits 4 naming it), or one process came up only after
	// the other was done: a no-op promote can take a few hundred
	// milliseconds. Either way no two deploys may overlap, and the
	// rounds must have met at the lease, or they prove nothing.
	runsBefore, runsWant, met := len(f.runs()), 0, 0
	for round := 1; round <= rounds; round++ {
		res := race(round, false)
		codes := []int{res[0].code, res[1].code}
		slices.Sort(codes)
		switch {
		case slices.Equal(codes, []int{exitOK, exitLocked}):
			met++
			win, lose := res[0], res[1]
			if win.code != exitOK {
				win, lose = lose, win
			}
			holder := win.id()
			if want := "env/staging is locked by run " + holder; !strings.Contains(lose.stderr, want) {
				t.Errorf("round %d: the second promote says %q, want it to name the holder: %q", round, strings.TrimSpace(lose.stderr), want)
			}
			if lose.stdout != "" {
				t.Errorf("round %d: the locked-out promote printed %q", round, lose.stdout)
			}
			winners = append(winners, holder)
			runsWant++
		case slices.Equal(codes, []int{exitOK, exitOK}):
			t.Logf("round %d: the two promotes did not meet: runs %s and %s", round, res[0].id(), res[1].id())
			winners = append(winners, res[0].id(), res[1].id())
			runsWant += 2
		default:
			t.Fatalf("round %d: exit codes %v, want one %d and one %d\nfirst: %s\nsecond: %s", round, codes, exitOK, exitLocked, res[0], res[1])
		}
	}
	for _, id := range winners {
		if v := f.run(id); v.Status != "succeeded" || v.Version != want.Version {
			t.Errorf("run %s: status %s, version %s; want succeeded, %s", id, v.Status, v.Version, want.Version)
		}
	}
	// A locked-out promote leaves no run behind.
	if got := len(f.runs()) - runsBefore; got != runsWant {
		t.Errorf("%d rounds made %d runs, want %d", rounds, got, runsWant)
	}
	t.Logf("%d of %d rounds met at the lease: one deployed, the other exited %d naming it", met, rounds, exitLocked)
	if met < rounds/2 {
		t.Errorf("only %d of %d rounds met at the lease", met, rounds)
	}

	// With --wait the second runs after the first.
	const waitRounds = 3
	for round := 1; round <= waitRounds; round++ {
		res := race(round, true)
		for _, r := range res {
			if r.code != exitOK {
				t.Fatalf("wait round %d: %s", round, r)
			}
			winners = append(winners, r.id())
		}
	}

	windows := f.nodeWindows("promote-staging", winners)
	for i := 1; i < len(windows); i++ {
		if a, b := windows[i-1], windows[i]; b.start.Before(a.end) {
			t.Errorf("runs %s (%s to %s) and %s (%s to %s) deployed staging at the same time",
				a.run, a.start.Format(time.StampMilli), a.end.Format(time.StampMilli), b.run, b.start.Format(time.StampMilli), b.end.Format(time.StampMilli))
		}
	}
	t.Logf("%d promotes of staging, %d at once with --wait, zero overlaps checked", len(windows), 2*waitRounds)
	f.checkRunning("staging", want.Images)
	f.checkStatus(f.status(), "staging", want.Version, want.Images)
}
