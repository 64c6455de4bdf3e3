package main

// TestSecrets runs the real binary with canary secrets, a registry password
// (and a wrong one), a GitHub token and a serve token, through failing and succeeding
// stages, and looks for them everywhere they must never be. The pieces:
//
//	a private registry   docker-registry with its own htpasswd (bcrypt of the canary password)
//	git over HTTP        fixtures/gitserver, the GitHub token as the basic-auth password
//	the GitHub API       fixtures/fakegithub, with an error body echoing the Authorization header
//	echoing proxies      in front of the registry and the git server: when armed, the next
//	                     request with credentials gets a 403 whose body echoes its Authorization
//	a deploy that pulls  the release's image is untagged first, so the engine pulls it with the auth
//
// The steps, all with -v (stage output streamed to stderr):
//
//	doctor     wrong registry password, GitHub echoes the header                 exit 1
//	run --yes  wrong registry password: the push is refused                      exit 3
//	resume     right password, the registry's proxy echoes: the push fails       exit 3
//	resume     the push goes through, the exec stage fails                       exit 3
//	resume     deploy (the engine's pull) and tag (git push) meet echoing proxies exit 3
//	resume     deploy pulls with the auth, tag pushes over HTTP, GitHub echoes   exit 3
//	resume     GitHub answers: the run succeeds                                  exit 0
//
// Scanned, for every canary in every form (plain, query- and path-escaped,
// JSON-escaped, base64 and base64url at each of the three alignments, the
// same of the JSON-escaped form, and basic auth's base64("user:secret")):
// each command's stdout and stderr; logs, runs show, runs list, show,
// status; every node's error; every file under the pipeline's directory
// (the SQLite store with its -wal and -shm, polled while the runs go); the
// docker inspect of the pipeline's images and containers;
// and the command line of every process on the machine, polled while the
// commands run, release and its children among them.
//
// As root:
//
//	eval "$(fixtures/up.sh)"
//	go test -race -count=1 -run TestSecrets -v ./cmd/release

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/fixtures/gitserver"
	"github.com/sweepboard/release/fixtures/parts"
)

// needle is one form of one canary.
type needle struct {
	canary, form string
	text         []byte
}

// canaryForms are the ways a secret may show up in text: as it is,
// escaped for a URL or JSON, and base64-encoded on its own or inside a
// longer value (the three alignments of base64). user, when set, adds the
// basic-auth form base64("user:secret").
func canaryForms(canary, secret, user string) []needle {
	var out []needle
	add := func(form, text string) {
		for _, n := range out {
			if string(n.text) == text {
				return
			}
		}
		out = append(out, needle{canary: canary, form: form, text: []byte(text)})
	}
	jsonText, _ := json.Marshal(secret)
	jsonEsc := string(jsonText[1 : len(jsonText)-1])
	add("plain", secret)
	add("query-escaped", url.QueryEscape(secret))
	add("path-escaped", url.PathEscape(secret))
	add("json-escaped", jsonEsc)
	for _, v := range []struct{ name, text string }{{"", secret}, {" of json-escaped", jsonEsc}} {
		for _, enc := range []struct {
			name string
			enc  *base64.Encoding
		}{{"base64", base64.RawStdEncoding}, {"base64", base64.RawURLEncoding}} {
			for pad := 0; pad < 3; pad++ {
				add(enc.name+v.name, base64Core(enc.enc, v.text, pad))
			}
		}
	}
	if user != "" {
		add("basic-auth", base64.StdEncoding.EncodeToString([]byte(user+":"+secret)))
	}
	return out
}

// base64Core is the part of the encoding of secret, preceded by pad other
// bytes, that depends on secret alone: what any base64 text holding secret
// at that alignment contains. (pipeline/redact has its own: the test does
// not trust the code it checks.)
func base64Core(enc *base64.Encoding, secret string, pad int) string {
	s := enc.EncodeToString(append(make([]byte, pad), secret...))
	from := (8*pad + 5) / 6
	to := 8 * (pad + len(secret)) / 6
	return s[from:to]
}

// scanner looks for the needles in what it is given and remembers where
// it found them.
type scanner struct {
	needles []needle

	mu     sync.Mutex
	places map[string]bool
	bytes  int64
	hits   []string
}

func (s *scanner) scan(place string, data []byte) {
	var hits []string
	for _, n := range s.needles {
		if i := bytes.Index(data, n.text); i >= 0 {
			hits = append(hits, fmt.Sprintf("%s: the %s in %s form at byte %d: …%q…", place, n.canary, n.form, i, around(data, i, len(n.text))))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.places[place] = true
	s.bytes += int64(len(data))
	s.hits = append(s.hits, hits...)
}

// around is what surrounds a hit, for the failure message.
func around(data []byte, i, n int) []byte {
	return data[max(i-40, 0):min(i+n+40, len(data))]
}

func (s *scanner) placeCount(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p := range s.places {
		if strings.HasPrefix(p, prefix) {
			n++
		}
	}
	return n
}

// procWatch reads, while release runs, the command lines of the release
// processes and their descendants every 10 ms (following
// /proc/PID/task/*/children), and the state store's files (with -wal and
// -shm, which exist only while a release process has the store open) every
// tenth round of that; and, in a slower loop of its own, the command line of
// every process on the machine.
type procWatch struct {
	sc      *scanner
	dir     string // the pipeline's directory
	onChild func(cmdline []byte)

	mu          sync.Mutex
	roots       map[int]bool // the pids of the release processes running now
	treeRounds  int
	tableRounds int
	cmdlines    int             // command lines read
	tree        map[string]bool // "pid/starttime" of release and its descendants seen
	store       map[string]int  // store files read while release ran, and how often
	err         error

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func (w *procWatch) start() {
	w.stop = make(chan struct{})
	w.loop(10*time.Millisecond, w.treeRound)
	w.loop(50*time.Millisecond, w.tableRound)
}

func (w *procWatch) loop(every time.Duration, round func(i int) error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			if err := round(i); err != nil {
				w.mu.Lock()
				w.err = errors.Join(w.err, err)
				w.mu.Unlock()
				return
			}
		}
	}()
}

// end stops the loops; it may be called more than once.
func (w *procWatch) end() error {
	w.once.Do(func() {
		close(w.stop)
		w.wg.Wait()
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *procWatch) track(pid int, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.roots[pid] = true
	} else {
		delete(w.roots, pid)
	}
}

// readProc reads a process's start time (to tell reused pids apart) and
// command line; ok is false when it is gone.
func readProc(pid int) (start string, cmdline []byte, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return "", nil, false
	}
	// pid (comm) state ppid … starttime is field 22; comm may hold spaces
	// and parentheses, so count from the last ')'.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 20 {
		return "", nil, false
	}
	cmdline, err = os.ReadFile(dir + "/cmdline")
	return f[19], cmdline, err == nil
}

// treeRound reads the command lines of release and its descendants.
func (w *procWatch) treeRound(i int) error {
	w.mu.Lock()
	queue := slices.Collect(maps.Keys(w.roots))
	w.mu.Unlock()
	running := len(queue) > 0
	seen := map[int]bool{}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		start, cmdline, ok := readProc(pid)
		if !ok {
			continue
		}
		w.sc.scan("process arguments of release and its children", cmdline)
		w.mu.Lock()
		w.tree[strconv.Itoa(pid)+"/"+start] = true
		w.cmdlines++
		w.mu.Unlock()
		if w.onChild != nil {
			w.onChild(cmdline)
		}
		lists, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
		for _, list := range lists {
			data, _ := os.ReadFile(list)
			for _, f := range strings.Fields(string(data)) {
				if child, err := strconv.Atoi(f); err == nil {
					queue = append(queue, child)
				}
			}
		}
	}
	w.mu.Lock()
	w.treeRounds++
	w.mu.Unlock()
	if !running || i%10 != 0 {
		return nil
	}
	paths, _ := filepath.Glob(filepath.Join(w.dir, ".release", "state.db*"))
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // the -wal goes away when the last connection closes
		}
		name := filepath.Base(path)
		w.sc.scan("file .release/"+name+" while release ran", data)
		w.mu.Lock()
		w.store[name]++
		w.mu.Unlock()
	}
	return nil
}

// tableRound reads the command line of every process on the machine.
func (w *procWatch) tableRound(int) error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, cmdline, ok := readProc(pid); ok {
			w.sc.scan("process arguments of every process", cmdline)
			n++
		}
	}
	w.mu.Lock()
	w.tableRounds++
	w.cmdlines += n
	w.mu.Unlock()
	return nil
}

// scanDir scans every regular file under dir.
func scanDir(sc *scanner, dir string) {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil // a file that went away between the listing and the read
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		sc.scan("file "+rel, data)
		return nil
	})
}

// echoProxy passes requests to h, except that, when armed, the next one
// with an Authorization header that match accepts gets a 403 whose body
// echoes that header, as a misconfigured proxy might.
type echoProxy struct {
	h     http.Handler
	match func(*http.Request) bool
	armed atomic.Bool
}

func (e *echoProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if auth != "" && e.match(r) && e.armed.CompareAndSwap(true, false) {
		http.Error(w, "forbidden for Authorization: "+auth, http.StatusForbidden)
		return
	}
	e.h.ServeHTTP(w, r)
}

// serveEcho serves h behind an echoProxy on 127.0.0.1 until the test ends.
func serveEcho(t *testing.T, h http.Handler, match func(*http.Request) bool) (*echoProxy, string) {
	e := &echoProxy{h: h, match: match}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv.URL
}

// secrets is the test's pipeline with its canaries.
type secrets struct {
	t        *testing.T
	bin, dir string
	name     string
	registry string // host:port of the private registry's echoing proxy
	user     string
	password string // the registry's password
	wrong    string // a wrong registry password, a secret all the same
	token    string // the GitHub token, also the git remotes' token
	serve    string // the serve token, which approves production gates
	useWrong bool
	gh       *fakegithub.Server
	regEcho  *echoProxy
	gitEcho  *echoProxy
	sc       *scanner
	watch    *procWatch
	commands int
}

// canary is a distinctive secret: a prefix, random hex, and characters
// that URL and JSON escaping change.
func canary(prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b) + "/x+y=z&w"
}

// startRegistry starts a docker-registry on a free port whose htpasswd
// holds user with password, until the test ends.
func startRegistry(t *testing.T, user, password string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		parts.Missing(t, "docker-registry", err)
	}
	dir := t.TempDir()
	// The hash is made here, not by a command: the password stays out of
	// every process's arguments.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := parts.ListenAddr(t)
	config := filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn, formatter: text}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: %s
auth:
  htpasswd: {realm: secrets-test, path: %s}
`, filepath.Join(dir, "data"), addr, htpasswd)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	c := http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := c.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("private registry answers /v2/ without credentials with %s, want 401", resp.Status)
			}
			return addr
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("private registry exited:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("private registry on %s did not answer: %v", addr, err)
		}
	}
}

const secretsPipeline = `name: %[1]s
version: {tag_prefix: v, bump: minor}
registry: {url: "%[2]s", insecure: true}
github: {owner: sweepboard, api_url: "%[3]s", token_env: GITHUB_TOKEN}
repos:
  auth: {url: "%[4]s/auth.git", branch: main, token_env: GITHUB_TOKEN}
services:
  auth:
    repo: auth
    image: %[1]s/auth
    port: 8080
    health: {http: /healthz, timeout: 30s}
environments:
  dev: {hosts: ["%[5]s"]}
stages:
  build:  {uses: docker-build, for_each: service}
  push:   {uses: docker-push, for_each: service, needs: [build]}
  check:
    uses: exec
    needs: [push]
    with:
      # Waits until the test has seen it in the process table, then fails
      # the first time and passes after. It prints the two tokens it is
      # given, which the log shows as ***.
      env_from: [RELEASE_SERVE_TOKEN, GITHUB_TOKEN]
      command:
        - sh
        - -c
        - |
          i=0
          until [ -e seen ]; do i=$((i+1)); [ $i -lt 1200 ] || exit 4; sleep 0.05; done
          if [ -e failed-once ]; then echo "check: smoke test passed"; exit 0; fi
          touch failed-once
          echo "check: serve token $RELEASE_SERVE_TOKEN, GitHub token $GITHUB_TOKEN" >&2
          echo "check: smoke test failed" >&2
          exit 3
        - secrets-check
  deploy: {uses: deploy, environment: dev, needs: [check]}
  tag:    {uses: git-tag, needs: [check]}
  notes:  {uses: github-release, needs: [deploy, tag]}
`

func newSecrets(t *testing.T) *secrets {
	t.Helper()
	needFlowParts(t)
	s := &secrets{
		t:        t,
		bin:      buildRelease(t),
		dir:      t.TempDir(),
		name:     fmt.Sprintf("secrets%d", os.Getpid()),
		user:     "canary-user",
		password: canary("RegCanary"),
		wrong:    canary("WrongCanary"),
		token:    canary("ghp_Canary"),
		serve:    canary("ServeCanary"),
	}
	var needles []needle
	needles = append(needles, canaryForms("registry password", s.password, s.user)...)
	needles = append(needles, canaryForms("wrong registry password", s.wrong, s.user)...)
	needles = append(needles, canaryForms("GitHub token", s.token, "x-access-token")...)
	needles = append(needles, canaryForms("serve token", s.serve, "")...)
	s.sc = &scanner{needles: needles, places: map[string]bool{}}

	backend, err := url.Parse("http://" + startRegistry(t, s.user, s.password))
	if err != nil {
		t.Fatal(err)
	}
	// The proxy keeps the Host header, so the registry's upload locations
	// point back to it.
	var regURL string
	s.regEcho, regURL = serveEcho(t, httputil.NewSingleHostReverseProxy(backend), func(*http.Request) bool { return true })
	s.registry = strings.TrimPrefix(regURL, "http://")
	s.gh = fakegithub.New(s.token)
	apiURL := s.gh.Start(t)
	reposDir, _ := parts.NewRepos(t)
	gitHandler, err := gitserver.New(reposDir, s.token)
	if err != nil {
		t.Fatalf("find git-http-backend: %v", err)
	}
	var gitURL string
	// The push itself, not the check before it that pushing is allowed.
	s.gitEcho, gitURL = serveEcho(t, gitHandler, func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack")
	})

	y := fmt.Sprintf(secretsPipeline, s.name, s.registry, apiURL, gitURL, parts.DockerHost)
	if err := os.WriteFile(filepath.Join(s.dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.cleanup)
	s.cleanup()

	s.watch = &procWatch{sc: s.sc, dir: s.dir, roots: map[int]bool{}, tree: map[string]bool{}, store: map[string]int{},
		onChild: func(cmdline []byte) {
			if bytes.Contains(cmdline, []byte("secrets-check")) {
				os.WriteFile(filepath.Join(s.dir, "seen"), nil, 0o644)
			}
		}}
	s.watch.start()
	t.Cleanup(func() {
		if err := s.watch.end(); err != nil {
			t.Errorf("read the process table: %v", err)
		}
	})
	return s
}

// cleanup removes the pipeline's containers, networks and images.
func (s *secrets) cleanup() {
	parts.RemoveMade(parts.DockerHost, s.name, "")
	for _, filter := range []string{"label=release.pipeline=" + s.name, "reference=" + s.registry + "/" + s.name + "/*"} {
		if ids := s.docker("images", "-q", "--filter", filter); ids != "" {
			s.docker(append([]string{"rmi", "-f"}, strings.Fields(ids)...)...)
		}
	}
}

func (s *secrets) docker(args ...string) string {
	out, err := exec.Command("docker", append([]string{"-H", parts.DockerHost}, args...)...).Output()
	if err != nil {
		s.t.Logf("docker %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// forgetImage removes every name of ref's image that points into the
// private registry, so that a deploy has to pull it.
func (s *secrets) forgetImage(ref string) {
	s.t.Helper()
	var imgs []struct{ RepoTags, RepoDigests []string }
	if err := json.Unmarshal([]byte(s.docker("image", "inspect", ref)), &imgs); err != nil || len(imgs) != 1 {
		s.t.Fatalf("docker image inspect %s: %v", ref, err)
	}
	for _, name := range append(imgs[0].RepoTags, imgs[0].RepoDigests...) {
		// A digest name may already be gone with the last tag of its
		// repository: what counts is the check below.
		if strings.HasPrefix(name, s.registry+"/") {
			exec.Command("docker", "-H", parts.DockerHost, "rmi", name).Run()
		}
	}
	if err := exec.Command("docker", "-H", parts.DockerHost, "image", "inspect", ref).Run(); err == nil {
		s.t.Fatalf("the engine still knows %s after its registry names were removed", ref)
	}
}

func (s *secrets) env() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		for _, p := range []string{"RELEASE_", "GITHUB_TOKEN=", "NO_COLOR=", "DOCKER_CONFIG=", "DOCKER_HOST="} {
			if strings.HasPrefix(kv, p) {
				return true
			}
		}
		return false
	})
	password := s.password
	if s.useWrong {
		password = s.wrong
	}
	return append(env,
		"GITHUB_TOKEN="+s.token,
		"RELEASE_SERVE_TOKEN="+s.serve,
		"RELEASE_REGISTRY_USER="+s.user,
		"RELEASE_REGISTRY_PASSWORD="+password,
		"DOCKER_CONFIG="+filepath.Join(s.dir, ".docker-config-none"),
		"NO_COLOR=1", "RELEASE_USER=secrets-test",
	)
}

// release runs the binary to its end with the process table watched, and
// scans what it printed and the files it left.
func (s *secrets) release(args ...string) result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, s.env()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.watch.track(cmd.Process.Pid, true)
	err := cmd.Wait()
	s.watch.track(cmd.Process.Pid, false)
	r := resultOf(s.t, args, err, &stdout, &stderr)
	s.commands++
	line := "release " + strings.Join(args, " ")
	s.sc.scan("stdout of "+line, stdout.Bytes())
	s.sc.scan("stderr of "+line, stderr.Bytes())
	scanDir(s.sc, s.dir)
	return r
}

func (s *secrets) want(code int, args ...string) result {
	s.t.Helper()
	r := s.release(args...)
	if r.code != code {
		s.t.Fatalf("release %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
	}
	return r
}

func (s *secrets) show(id string) runView {
	s.t.Helper()
	r := s.want(0, "runs", "show", id, "-o", "json")
	var v runView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		s.t.Fatalf("runs show -o json: %v\n%s", err, r.stdout)
	}
	return v
}

// nodeErrors are the recorded errors of run id's nodes, scanned as error
// text, and the run's status as "run".
func (s *secrets) nodeErrors(id string) map[string]string {
	s.t.Helper()
	v := s.show(id)
	errs := map[string]string{"run": v.Status}
	for _, n := range v.Stages {
		if n.Error != "" {
			s.sc.scan("error text of "+n.ID+" in "+id, []byte(n.Error))
			errs[n.ID] = n.Error
		}
	}
	return errs
}

// resume resumes run id with -v, wants the exit code code and the nodes
// failed on their own to be failed, and returns the result and the nodes'
// errors.
func (s *secrets) resume(id string, code int, failed ...string) (result, map[string]string) {
	s.t.Helper()
	r := s.want(code, "-v", "resume", id, "--parallel", "4")
	errs := s.nodeErrors(id)
	if got := failedNodes(errs); !slices.Equal(got, failed) {
		s.t.Fatalf("after resume: failed %v, want %v; errors %q\n%s", got, failed, errs, r)
	}
	return r, errs
}

// failedNodes are the nodes of errs that failed on their own, not skipped
// after an upstream failure.
func failedNodes(errs map[string]string) []string {
	var out []string
	for _, n := range sortedKeys(errs) {
		if n != "run" && !strings.HasPrefix(errs[n], "upstream ") {
			out = append(out, n)
		}
	}
	return out
}

func TestSecrets(t *testing.T) {
	s := newSecrets(t)

	// doctor: the registry refuses the wrong password, GitHub echoes the
	// header of its one request.
	s.useWrong = true
	s.gh.Inject(fakegithub.Fault{Kind: fakegithub.EchoAuth, Path: "/releases"})
	r := s.want(1, "-v", "doctor")
	for _, want := range []string{"registry " + s.registry, "Bad credentials: Authorization:"} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("doctor does not report %q:\n%s", want, r)
		}
	}

	// A push with the wrong password is refused; the run stays resumable.
	r = s.want(exitFailed, "-v", "run", "--yes", "--parallel", "4")
	id := r.id()
	errs := s.nodeErrors(id)
	if e := strings.ToLower(errs["push[auth]"]); !strings.Contains(e, "unauthorized") && !strings.Contains(e, "authentication required") {
		t.Fatalf("push with a wrong password: error %q, want an authentication failure\n%s", e, r)
	}

	// The right password, but the registry's proxy echoes it back.
	s.useWrong = false
	s.regEcho.armed.Store(true)
	_, errs = s.resume(id, exitFailed, "push[auth]")
	if s.regEcho.armed.Load() {
		t.Fatal("the registry's proxy did not echo")
	}
	if e := errs["push[auth]"]; !strings.Contains(e, "forbidden for Authorization: Basic ") || !strings.Contains(e, "***") {
		t.Errorf("push's error %q, want the echoed header redacted", e)
	}

	// The push goes through; the exec stage fails.
	r, _ = s.resume(id, exitFailed, "check")
	if !strings.Contains(r.stderr, "check: smoke test failed") {
		t.Errorf("-v does not show the exec stage's output:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "check: serve token ***, GitHub token ***") {
		t.Errorf("-v does not show the tokens the exec stage printed as ***:\n%s", r.stderr)
	}

	// The engine pulls the image for the deploy (it has no name in the
	// registry any more) and the tag is pushed over HTTP, in parallel:
	// both meet a proxy that echoes their credentials.
	image := s.show(id).Images["auth"]
	if image == "" {
		t.Fatalf("run %s records no image of auth", id)
	}
	s.forgetImage(image)
	s.regEcho.armed.Store(true)
	s.gitEcho.armed.Store(true)
	_, errs = s.resume(id, exitFailed, "deploy", "tag")
	if s.regEcho.armed.Load() || s.gitEcho.armed.Load() {
		t.Fatalf("the proxies did not echo (registry's still armed: %v, git's: %v)", s.regEcho.armed.Load(), s.gitEcho.armed.Load())
	}
	for _, node := range []string{"deploy", "tag"} {
		if e := errs[node]; !strings.Contains(e, "forbidden for Authorization: Basic ") || !strings.Contains(e, "***") {
			t.Errorf("%s's error %q, want the echoed header redacted", node, e)
		}
	}

	// The deploy pulls with the registry auth, the tag is pushed with the
	// token; GitHub echoes the header.
	s.gh.Inject(fakegithub.Fault{Kind: fakegithub.EchoAuth, Path: "/releases"})
	_, errs = s.resume(id, exitFailed, "notes")
	if e := errs["notes"]; !strings.Contains(e, "Bad credentials: Authorization: Bearer ***") {
		t.Errorf("notes' error %q, want the echoed header redacted", e)
	}

	// GitHub answers: the run succeeds.
	if _, errs = s.resume(id, 0); errs["run"] != "succeeded" {
		t.Fatalf("run %s is %s after the last resume", id, errs["run"])
	}
	if got := len(s.gh.Releases("sweepboard", "auth")); got != 1 {
		t.Errorf("GitHub releases of auth: %d, want 1", got)
	}

	if err := exec.Command("docker", "-H", parts.DockerHost, "image", "inspect", image).Run(); err != nil {
		t.Errorf("the deploy did not pull %s: %v", image, err)
	}

	// Everything that reports.
	v := s.show(id)
	s.want(0, "logs", id)
	s.want(0, "logs", id, "push")
	s.want(0, "runs", "list", "-o", "json")
	s.want(0, "show", v.Version, "-o", "json")
	s.want(0, "status", "-o", "json")
	s.want(0, "-v", "doctor")

	// The images built and pulled and the containers running: labels,
	// environment, arguments.
	inspected := map[string]int{}
	for _, kind := range []string{"container", "image"} {
		list := []string{"ps", "-aq"}
		if kind == "image" {
			list = []string{"images", "-q", "--no-trunc"}
		}
		for _, id := range strings.Fields(s.docker(append(list, "--filter", "label=release.pipeline="+s.name)...)) {
			out, err := exec.Command("docker", "-H", parts.DockerHost, kind, "inspect", id).Output()
			if err != nil {
				t.Fatalf("docker %s inspect %s: %v", kind, id, err)
			}
			s.sc.scan(fmt.Sprintf("docker inspect of %s %.19s", kind, id), out)
			inspected[kind]++
		}
		if inspected[kind] == 0 {
			t.Errorf("nothing to inspect: no %s of pipeline %s", kind, s.name)
		}
	}

	if err := s.watch.end(); err != nil {
		t.Fatalf("read the process table: %v", err)
	}
	w := s.watch
	w.mu.Lock()
	treeRounds, tableRounds, cmdlines, tree, store := w.treeRounds, w.tableRounds, w.cmdlines, len(w.tree), maps.Clone(w.store)
	w.mu.Unlock()
	// The exec stage waited until its process was seen; the runs lasted
	// seconds with the store open.
	if _, err := os.Stat(filepath.Join(s.dir, "seen")); err != nil {
		t.Errorf("the exec stage's process was never seen in the process table: %v", err)
	}
	for _, name := range []string{"state.db", "state.db-wal", "state.db-shm"} {
		if store[name] == 0 {
			t.Errorf("the store's %s was never read while release ran: read %v", name, store)
		}
	}

	s.sc.mu.Lock()
	hits, places, scanned := slices.Clone(s.sc.hits), len(s.sc.places), s.sc.bytes
	s.sc.mu.Unlock()
	forms := map[string]bool{}
	for _, n := range s.sc.needles {
		forms[n.form] = true
	}
	storeReads := 0
	for _, n := range store {
		storeReads += n
	}
	t.Logf("secret hits: %d in %d places, %.1f MB scanned for 3 canaries in %d forms (%d needles)",
		len(hits), places, float64(scanned)/1e6, len(forms), len(s.sc.needles))
	t.Logf("places: stdout and stderr of %d commands; %d files of the pipeline's directory; %d error texts; %d docker inspects; the store's files read %d times while release ran; %d processes of release and its children (%d rounds); the whole process table (%d rounds); %d command lines in all",
		s.commands, s.sc.placeCount("file ")-len(store), s.sc.placeCount("error text "), inspected["image"]+inspected["container"],
		storeReads, tree, treeRounds, tableRounds, cmdlines)
	t.Logf("forms: %s", strings.Join(sortedKeys(forms), ", "))
	slices.Sort(hits)
	for _, h := range slices.Compact(hits) {
		t.Errorf("secret found: %s", h)
	}
}

// TestSecretsScannerFindsEveryForm checks the scanner on the encodings a
// secret travels in: a basic-auth header, the engine's X-Registry-Auth
// (base64url of JSON), a JSON document, a URL, base64 at any offset.
func TestSecretsScannerFindsEveryForm(t *testing.T) {
	secret := canary("Test")
	sc := &scanner{needles: canaryForms("canary", secret, "user"), places: map[string]bool{}}
	authJSON, _ := json.Marshal(map[string]string{"username": "user", "password": secret})
	doc, _ := json.Marshal(map[string]string{"error": "push: " + secret})
	texts := map[string]string{
		"plain":           "error: " + secret + "\n",
		"basic auth":      "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+secret)),
		"X-Registry-Auth": base64.URLEncoding.EncodeToString(authJSON),
		"JSON":            string(doc),
		"URL query":       "https://h/?token=" + url.QueryEscape(secret),
		"URL path":        "https://h/" + url.PathEscape(secret) + "/x",
	}
	for pad := 0; pad < 3; pad++ {
		texts[fmt.Sprintf("base64 after %d bytes", pad)] = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", pad) + secret + "tail"))
	}
	for name, text := range texts {
		sc.scan(name, []byte(text))
	}
	found := map[string]bool{}
	for _, h := range sc.hits {
		found[strings.SplitN(h, ":", 2)[0]] = true
	}
	for name := range texts {
		if !found[name] {
			t.Errorf("the scanner misses the secret in %s: %q", name, texts[name])
		}
	}
	sc.hits = nil
	sc.scan("unrelated", []byte(base64.StdEncoding.EncodeToString(authJSON[:10])+url.QueryEscape("Test0123")))
	if len(sc.hits) != 0 {
		t.Errorf("hits in unrelated text: %q", sc.hits)
	}
}
