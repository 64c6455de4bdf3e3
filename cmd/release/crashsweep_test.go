package main

// TestCrashSweep kills the real binary at every persisted status change of
// a reference run and resumes it. The reference pipeline has two exec
// stages, docker-build and docker-push of a fixture service, a deploy to an
// environment on the real engine, git-tag of two local bare remotes and
// github-release of both on the fake GitHub API.
//
//  1. A clean run, with fault injection counting (RELEASE_TEST_KILL_AFTER_WRITES=0),
//     gives N, the number of status writes, and the end state.
//  2. For k = 1..N, a fresh point: its own directory, state store, copies of
//     the fixture remotes, fake GitHub and environment (so containers are
//     counted per point). `release run` dies by SIGKILL right after its k-th
//     status write; `release resume RUN` then runs until the run ends.
//  3. Each point must end as the clean run did: every node succeeded, the
//     same release record (version, commits, digests), and every external
//     effect exactly once: one tag per repo at the built commit, one GitHub
//     release per repo, the digests in the registry, one running container
//     per service at its digest, no other container of the environment.
//
// The pipeline name, and so the images' build key, is shared by the points:
// the clean run builds, the points reuse the images, and the digests of
// every point must be the clean run's.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// The sweep's pipeline tags and releases two fixture repos and builds,
// pushes and deploys one service from one of them: a deploy costs the most
// of a run on the vfs storage driver, and every kill point deploys once.
var (
	sweepRepos    = []string{"api", "auth"}
	sweepServices = []string{"auth"}
)

const sweepVersion = "1.0.0"

const sweepPipeline = `
name: {{name}}
version: {tag_prefix: v, bump: minor}
registry: {url: ` + parts.Registry + `, insecure: true}
github: {owner: sweepboard, api_url: "{{api}}", token_env: GITHUB_TOKEN}
repos:
  auth: {url: repos/auth.git, branch: main}
  api:  {url: repos/api.git, branch: main}
services:
  auth: {repo: auth, image: {{name}}/auth, port: 8080, health: {http: /healthz, timeout: 30s}}
environments:
  {{env}}: {hosts: [` + parts.DockerHost + `]}
stages:
  check:    {uses: exec, with: {command: [sh, -c, 'echo checked']}}
  build:    {uses: docker-build, for_each: service}
  push:     {uses: docker-push, for_each: service, needs: [build]}
  deploy:   {uses: deploy, environment: {{env}}, needs: [check, push]}
  tag:      {uses: git-tag, needs: [deploy]}
  notes:    {uses: github-release, needs: [tag]}
  announce: {uses: exec, needs: [notes], with: {command: [sh, -c, 'echo announced']}}
`

// sweepPoint is one run of the sweep's pipeline in a world of its own,
// except for the engine's images and the registry.
type sweepPoint struct {
	*flow
	env string
}

// sweepEnd is what a run ends as, for comparison with the clean run.
type sweepEnd struct {
	Status  string
	Nodes   map[string]string
	Release pipeline.Release
}

func newSweepPoint(t *testing.T, bin, name, reposDir, env string) *sweepPoint {
	t.Helper()
	token := fmt.Sprintf("sweep-token-%d", time.Now().UnixNano())
	p := &sweepPoint{flow: &flow{t: t, bin: bin, dir: t.TempDir(), name: name, token: token, gh: fakegithub.New(token)}, env: env}
	y := strings.NewReplacer("{{name}}", name, "{{env}}", env, "{{api}}", p.gh.Start(t)).Replace(sweepPipeline)
	if err := os.WriteFile(filepath.Join(p.dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(p.dir, "repos"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, repo := range sweepRepos {
		// A copy of a bare remote keeps its commits: every point builds
		// from the same SHAs, and tags only its own copy.
		if out, err := exec.Command("cp", "-a", filepath.Join(reposDir, repo+".git"), filepath.Join(p.dir, "repos")).CombinedOutput(); err != nil {
			t.Fatalf("copy remote %s: %v\n%s", repo, err, out)
		}
	}
	t.Cleanup(func() { p.removeContainers() })
	return p
}

// start runs `release run` with fault injection killing it after its k-th
// status write (0: never). It returns the status writes the process
// reported and whether it died by SIGKILL.
func (p *sweepPoint) start(k int) (writes []string, killed bool) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := p.command(ctx, "run", "--version", sweepVersion)
	cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", killAfterWritesEnv, k))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	for _, line := range strings.Split(stderr.String(), "\n") {
		if what, ok := strings.CutPrefix(line, "fault injection: write "); ok {
			writes = append(writes, what)
		}
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		ws, _ := exit.Sys().(syscall.WaitStatus)
		if ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return writes, true
		}
		p.t.Fatalf("release run (kill after write %d): %v\nstdout:\n%s\nstderr:\n%s", k, err, stdout.String(), stderr.String())
	case err != nil:
		p.t.Fatalf("release run: %v", err)
	}
	return writes, false
}

// runID is the one run of the point's store.
func (p *sweepPoint) runID() string {
	p.t.Helper()
	runs := p.runs()
	if len(runs) != 1 {
		p.t.Fatalf("the point's store has %d runs, want 1: %+v", len(runs), runs)
	}
	return runs[0].ID
}

// end reads the run, the release record and the environment's history
// from the point's store; Release is empty when there is no record yet.
func (p *sweepPoint) end(id string) (sweepEnd, []*pipeline.Deployment) {
	p.t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(p.dir, ".release", "state.db"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Run(ctx, id)
	if err != nil {
		p.t.Fatal(err)
	}
	e := sweepEnd{Status: string(r.Status), Nodes: map[string]string{}}
	for _, n := range r.Nodes {
		e.Nodes[n.ID] = string(n.Status)
	}
	if rel, err := st.Release(ctx, sweepVersion); err == nil {
		e.Release = pipeline.Release{Version: rel.Version, Pipeline: rel.Pipeline, Commits: rel.Commits, Images: rel.Images}
	}
	deps, err := st.Deployments(ctx, p.env, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	return e, deps
}

// effects checks every external effect of the run against its release
// record: it returns the effects found more than once (or left over) and
// those missing or wrong.
func (p *sweepPoint) effects(rel pipeline.Release, deps []*pipeline.Deployment) (dups, missing []string) {
	p.t.Helper()
	count := func(what string, n int, extra string) {
		switch {
		case n > 1:
			dups = append(dups, fmt.Sprintf("%d× %s%s", n, what, extra))
		case n == 0:
			missing = append(missing, what+extra)
		}
	}
	tag := "v" + sweepVersion
	for _, repo := range sweepRepos {
		tags := p.tags(repo)
		n := len(tags)
		if tags[tag] != rel.Commits[repo] {
			n = 0
		}
		count(fmt.Sprintf("tag %s of %s at %s", tag, repo, rel.Commits[repo]), n, fmt.Sprintf(" (tags: %v)", tags))
		rels := p.gh.Releases("sweepboard", repo)
		n = len(rels)
		for _, r := range rels {
			if r.TagName != tag || r.Draft {
				n = 0
			}
		}
		count(fmt.Sprintf("published GitHub release %s of %s", tag, repo), n, fmt.Sprintf(" (releases: %+v)", rels))
	}
	for _, svc := range sweepServices {
		if code := manifestStatus(p.t, rel.Images[svc]); code != http.StatusOK {
			missing = append(missing, fmt.Sprintf("%s in the registry (HEAD: %d)", rel.Images[svc], code))
		}
	}
	boxes := p.containers(p.env)
	for _, svc := range sweepServices {
		b := boxes[svc]
		n := len(b)
		for _, c := range b {
			if !c.Running || c.Digest != rel.Images[svc] || !slices.Contains(c.Repo, rel.Images[svc]) {
				n = 0
			}
		}
		count(fmt.Sprintf("running container of %s in %s at %s", svc, p.env, rel.Images[svc]), n, fmt.Sprintf(" (containers: %+v)", b))
		delete(boxes, svc)
	}
	if len(boxes) > 0 {
		dups = append(dups, fmt.Sprintf("containers of other services in %s: %+v", p.env, boxes))
	}
	// A container that lost its labels would still carry the name.
	if named := strings.Fields(p.docker("ps", "-aq", "--filter", "name="+p.name+"-"+p.env+"-")); len(named) > len(sweepServices) {
		dups = append(dups, fmt.Sprintf("%d containers named %s-%s-*, want %d", len(named), p.name, p.env, len(sweepServices)))
	}
	var hist []string
	for _, d := range deps {
		hist = append(hist, d.Version+" by run "+d.RunID)
	}
	count(fmt.Sprintf("deployment of %s in the history of %s", sweepVersion, p.env), len(deps), fmt.Sprintf(" (history: %q)", hist))
	return dups, missing
}

// removeContainers removes the point's containers and its environment's
// network.
func (p *sweepPoint) removeContainers() { parts.RemoveMade(parts.DockerHost, p.name, p.env) }

// manifestStatus is the registry's answer to a HEAD of ref's manifest. A
// 5xx is asked again for up to 10 s: a push of the killed process that the
// engine carried on with can still be rewriting the same link files, and
// the registry's filesystem storage answers 500 ("invalid checksum digest
// format") when it reads one half written.
func manifestStatus(t *testing.T, ref string) int {
	t.Helper()
	if digestOf(ref) == "" {
		t.Errorf("image %q is not pinned by digest", ref)
		return 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code := headManifest(t, ref, digestOf(ref)).StatusCode
		if code < 500 || time.Now().After(deadline) {
			return code
		}
		t.Logf("HEAD %s: %d, asking again", ref, code)
		time.Sleep(500 * time.Millisecond)
	}
}

func TestCrashSweep(t *testing.T) {
	needFlowParts(t)
	parts.RequireRegistry(t, parts.Registry)
	bin := buildRelease(t)
	reposDir, _ := parts.Repos(t)
	name := fmt.Sprintf("crashsweep%d", os.Getpid())
	images := &flow{t: t, name: name}
	images.cleanup() // what a killed earlier test process of this pid left
	t.Cleanup(images.cleanup)
	start := time.Now()

	clean := newSweepPoint(t, bin, name, reposDir, "e00")
	writes, killed := clean.start(0)
	if killed {
		t.Fatal("the clean run was killed")
	}
	want, deps := clean.end(clean.runID())
	if want.Status != "succeeded" || want.Release.Version != sweepVersion {
		t.Fatalf("the clean run: %s, release record %+v\n%+v", want.Status, want.Release, want.Nodes)
	}
	if dups, missing := clean.effects(want.Release, deps); len(dups)+len(missing) > 0 {
		t.Fatalf("the clean run's effects: duplicated %q, missing %q", dups, missing)
	}
	clean.removeContainers()
	t.Logf("clean run: %d status writes in %v:\n  %s", len(writes), time.Since(start).Round(time.Millisecond), strings.Join(writes, "\n  "))

	var (
		mu                                       sync.Mutex
		tested, converged, duplicates, unreached int
	)
	// The points are independent worlds: they run -parallel at a time,
	// most of their time spent waiting for the engine.
	t.Run("points", func(t *testing.T) {
		for k := 1; k <= len(writes); k++ {
			t.Run(fmt.Sprintf("kill-after-%02d", k), func(t *testing.T) {
				t.Parallel()
				p := newSweepPoint(t, bin, name, reposDir, fmt.Sprintf("e%02d", k))
				got, killed := p.start(k)
				if !killed {
					// Nodes that finish together share a write, so the
					// count of a run may come out lower than the clean
					// run's: this point was not reached this time.
					t.Logf("not killed: the run ended after %d writes", len(got))
					mu.Lock()
					unreached++
					mu.Unlock()
					return
				}
				at := got[len(got)-1]
				id := p.runID()
				resumes := 0
				for e, _ := p.end(id); e.Status != "succeeded" && resumes < 3; e, _ = p.end(id) {
					resumes++
					if r := p.release("resume", id); r.code != 0 {
						t.Logf("resume %d of %s, killed after write %s: %s", resumes, id, at, r)
					}
				}
				end, deps := p.end(id)
				diff := cmp.Diff(want, end)
				dups, missing := p.effects(end.Release, deps)
				mu.Lock()
				tested++
				if diff == "" && len(missing) == 0 {
					converged++
				}
				duplicates += len(dups)
				mu.Unlock()
				if diff != "" {
					t.Errorf("killed after write %s, resumed %d times: end state (-clean +point):\n%s", at, resumes, diff)
				}
				for _, d := range dups {
					t.Errorf("killed after write %s, resumed %d times: duplicated: %s", at, resumes, d)
				}
				for _, m := range missing {
					t.Errorf("killed after write %s, resumed %d times: missing: %s", at, resumes, m)
				}
				if resumes > 1 {
					t.Logf("killed after write %s: converged after %d resumes", at, resumes)
				}
			})
		}
	})
	t.Logf("crash sweep: %d kill points tested, %d converged, %d duplicate effects (%d of %d writes not reached; %v)",
		tested, converged, duplicates, unreached, len(writes), time.Since(start).Round(time.Second))
	if tested == 0 || converged != tested || duplicates > 0 {
		t.Errorf("crash sweep: %d of %d kill points converged, %d duplicate effects", converged, tested, duplicates)
	}
}
