// Package jobtest gives the tests of the docker-run and docker-exec stages
// what they share: the real parts (Docker engines, the registry) they run
// against, images of the fixture service with the job binary of
// testdata/job beside it, deploys of a test environment, and cleanup. As
// root:
//
//	eval "$(fixtures/up.sh)"
//	go test -race -count=1 ./stages/dockerrun/ ./stages/dockerexec/
//
// With CI set, a missing part fails the tests; otherwise they skip.
package jobtest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// Pipeline is the name of the test pipelines: the first part of their
// images, containers and networks.
const Pipeline = "jobtest"

// The real parts: fixtures/up.sh starts them and prints these variables;
// the defaults are its addresses.
var (
	Host1    = envOr("RELEASE_TEST_DOCKER_HOST", parts.DockerHost)
	Host2    = envOr("RELEASE_TEST_DOCKER_HOST2", parts.DockerHost2)
	Registry = envOr("RELEASE_TEST_REGISTRY", parts.Registry)
)

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// Need checks the engines at hosts and the registry: a missing one fails
// the test when CI is set and skips it otherwise.
func Need(tb testing.TB, hosts ...string) {
	tb.Helper()
	for _, h := range hosts {
		parts.Docker(tb, h)
	}
	parts.RequireRegistry(tb, Registry)
}

// EnvName makes a test's environment name unique to this test process.
func EnvName(base string) string { return fmt.Sprintf("%s-%d", base, os.Getpid()) }

// dir is this package's directory, where testdata/job is.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

var bins struct {
	once sync.Once
	dir  string
	err  error
}

// binaries builds the fixture service and the job binary, static, once
// per test process.
func binaries(tb testing.TB) (service, job []byte) {
	tb.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "jobtest-bin")
		if bins.err != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{
			{"service", filepath.Join(parts.Root(), "fixtures", "services")},
			{"job", filepath.Join(dir(), "testdata", "job")},
		} {
			cmd := exec.Command("go", "build", "-ldflags", "-X main.version=fixture", "-o", filepath.Join(bins.dir, b.out), ".")
			cmd.Dir = b.pkg
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		tb.Fatal(bins.err)
	}
	service, err := os.ReadFile(filepath.Join(bins.dir, "service"))
	if err != nil {
		tb.Fatal(err)
	}
	job, err = os.ReadFile(filepath.Join(bins.dir, "job"))
	if err != nil {
		tb.Fatal(err)
	}
	return service, job
}

var images struct {
	sync.Mutex
	refs map[string]string
}

// Image builds and pushes an image of the fixture service as service
// (/SERVICE, answering version), with /job beside it, and returns its
// digest reference; once per test process.
func Image(tb testing.TB, service, version string) string {
	tb.Helper()
	images.Lock()
	defer images.Unlock()
	key := service + ":" + version
	if ref, ok := images.refs[key]; ok {
		return ref
	}
	svc, job := binaries(tb)
	dockerfile := fmt.Sprintf("FROM scratch\nENTRYPOINT [\"/%s\"]\nENV SERVICE_VERSION=%s\n"+
		"HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD [\"/%s\", \"-healthcheck\"]\n"+
		"COPY bin-service /%s\nCOPY bin-job /job\n", service, version, service, service)
	tag := fmt.Sprintf("%s/%s/%s:%s-%d", Registry, Pipeline, service, version, os.Getpid())
	ref := buildPush(tb, tag, map[string][]byte{"bin-service": svc, "bin-job": job, "Dockerfile": []byte(dockerfile)})
	if images.refs == nil {
		images.refs = map[string]string{}
	}
	images.refs[key] = ref
	return ref
}

// buildPush builds an image of files on Host1, pushes it as tag and
// returns its digest reference.
func buildPush(tb testing.TB, tag string, files map[string][]byte) string {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		mode := int64(0o644)
		if strings.HasPrefix(name, "bin-") {
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := parts.Docker(tb, Host1)
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		tb.Fatalf("build %s: %v", tag, err)
	}
	err = dockerhost.StreamError(resp.Body)
	resp.Body.Close()
	if err != nil {
		tb.Fatalf("build %s: %v", tag, err)
	}
	return push(tb, cli, ctx, tag)
}

func push(tb testing.TB, cli *client.Client, ctx context.Context, tag string) string {
	tb.Helper()
	return parts.Push(ctx, tb, cli, tag, "")
}

// Health is the fixture service's health check, generous for a busy
// machine.
var Health = stages.Health{HTTP: "/healthz", Timeout: 30 * time.Second}

// Cleanup removes what a test environment left on both engines, now and
// when the test ends: containers, jobs included, and the network.
func Cleanup(tb testing.TB, spec *stages.Spec, environment string) {
	tb.Helper()
	clean := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, addr := range []string{Host1, Host2} {
			h, err := dockerhost.Open(addr)
			if err != nil {
				continue
			}
			list, _ := h.List(ctx, map[string]string{target.LabelPipeline: Pipeline, target.LabelEnvironment: environment})
			for _, c := range list {
				_ = h.Remove(ctx, c.ID)
			}
			_ = h.RemoveNetwork(ctx, spec.NetworkName(environment))
			h.Close()
		}
	}
	clean()
	tb.Cleanup(clean)
}

// Deploy deploys images to the environment with the deploy stage.
func Deploy(tb testing.TB, spec *stages.Spec, environment, version string, images map[string]string) {
	tb.Helper()
	log := &Log{}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	_, err := (&deploy.Stage{StopTimeout: 2 * time.Second}).Run(ctx, &stages.Env{
		RunID: "deploy-" + version, RunKind: "run", Version: version, Node: "deploy-" + environment,
		Stage: "deploy-" + environment, Environment: environment, Attempt: 1, Spec: spec, Images: images,
		Log: log,
	})
	if err != nil {
		tb.Fatalf("deploy %s to %s: %v\n%s", version, environment, err, log)
	}
	tb.Logf("deployed %s to %s in %s", version, environment, time.Since(began).Round(time.Millisecond))
}

// Log is a run log a test reads back; safe for concurrent writes.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Jobs lists the job containers of a run's node on host, running or not.
func Jobs(tb testing.TB, host, runID, node string) []dockerhost.Container {
	tb.Helper()
	h, err := dockerhost.Open(host)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	list, err := h.List(context.Background(), map[string]string{target.LabelRunID: runID, target.LabelNode: node})
	if err != nil {
		tb.Fatal(err)
	}
	return list
}

// DataDir is a directory for a service's bind mount that every engine of
// this machine can write into.
func DataDir(tb testing.TB) string {
	tb.Helper()
	d := tb.TempDir()
	if err := os.Chmod(d, 0o777); err != nil {
		tb.Fatal(err)
	}
	return d
}
