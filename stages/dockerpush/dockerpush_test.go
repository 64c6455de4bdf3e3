package dockerpush

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/dockerbuild"
)

// counter is a reverse proxy in front of a registry that counts the
// requests that write to it, so a test can tell an upload from none.
type counter struct {
	mu     sync.Mutex
	writes []string // "METHOD path"
	addr   string
}

func newCounter(t *testing.T, registry string) *counter {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: registry}
	c := &counter{}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		// Keep the proxy's address, so that upload locations lead back here.
		r.Out.Host = r.In.Host
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			c.mu.Lock()
			c.writes = append(c.writes, r.Method+" "+r.URL.Path)
			c.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c.addr = ln.Addr().String()
	return c
}

// take returns the writes seen since the last call.
func (c *counter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

func blobWrites(writes []string) []string {
	var b []string
	for _, w := range writes {
		if strings.Contains(w, "/blobs/") {
			b = append(b, w)
		}
	}
	return b
}

func randName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

type fixture struct {
	cli      *client.Client
	spec     *stages.Spec
	workDir  string
	commits  map[string]string
	pipeline string
}

// newFixture is a pipeline over the fixture repos whose images go to
// registry under a repository path of their own.
func newFixture(t testing.TB, registry string) *fixture {
	t.Helper()
	cli := parts.Docker(t, parts.DockerHost)
	dir, heads := parts.Repos(t)
	f := &fixture{cli: cli, workDir: t.TempDir(), commits: heads, pipeline: randName("pushtest-")}
	f.spec = &stages.Spec{
		Name:     f.pipeline,
		Registry: stages.ImageRegistry{URL: registry, Insecure: true},
		Repos:    map[string]stages.Repo{},
		Services: map[string]stages.Service{},
	}
	for _, s := range parts.Services {
		f.spec.Repos[s] = stages.Repo{URL: filepath.Join(dir, s+".git"), Branch: "main"}
		f.spec.Services[s] = stages.Service{Repo: s, Image: f.pipeline + "/" + s}
	}
	t.Cleanup(func() {
		imgs, _ := cli.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", dockerbuild.LabelPipeline+"="+f.pipeline))})
		for _, img := range imgs {
			cli.ImageRemove(context.Background(), img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	return f
}

func (f *fixture) env(item, version string, log *bytes.Buffer, inputs map[string]stages.Outputs) *stages.Env {
	return &stages.Env{
		RunID: "r1", RunKind: "run", Version: version, Item: item, Node: "push[" + item + "]", Stage: "push",
		Spec: f.spec, WorkDir: f.workDir, Commits: f.commits, Inputs: inputs, Log: log,
		Logger: slog.New(slog.NewTextHandler(log, nil)),
	}
}

// build builds the services at once, as the executor's fan-out would.
func (f *fixture) build(t testing.TB, services ...string) map[string]stages.Outputs {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	outs := map[string]stages.Outputs{}
	errs := map[string]error{}
	start := time.Now()
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var log bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := (&dockerbuild.Stage{Host: parts.DockerHost}).Run(ctx, f.env(s, "1.2.0", &log, nil))
			mu.Lock()
			defer mu.Unlock()
			outs["build["+s+"]"], errs[s] = out, err
			if err != nil {
				errs[s] = fmt.Errorf("%w\n%s", err, log.String())
			}
		}()
	}
	wg.Wait()
	for s, err := range errs {
		if err != nil {
			t.Fatalf("build %s: %v", s, err)
		}
	}
	if _, ok := t.(*testing.T); ok {
		t.Logf("built %v in %s", services, time.Since(start).Round(time.Millisecond))
	}
	return outs
}

func (f *fixture) push(t testing.TB, item, version string, inputs map[string]stages.Outputs) (stages.Outputs, string, error) {
	t.Helper()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := (&Stage{Host: parts.DockerHost}).Run(ctx, f.env(item, version, &log, inputs))
	if _, ok := t.(*testing.T); ok {
		t.Logf("push %s %s: %s", item, version, time.Since(start).Round(time.Millisecond))
	}
	return out, log.String(), err
}

func TestPushFixtureServicesOnceByDigest(t *testing.T) {
	parts.RequireRegistry(t, parts.Registry)
	reg := newCounter(t, parts.Registry)
	f := newFixture(t, reg.addr)
	built := f.build(t, parts.Services...)

	images := map[string]string{}
	for _, s := range parts.Services {
		out, log, err := f.push(t, s, "1.2.0", built)
		if err != nil {
			t.Fatalf("push %s: %v\n%s", s, err, log)
		}
		repo := reg.addr + "/" + f.pipeline + "/" + s
		if !strings.HasPrefix(out["image"], repo+"@sha256:") || out["pushed"] != "true" {
			t.Fatalf("push %s: outputs %v, want a fresh push to %s@sha256:…", s, out, repo)
		}
		if w := blobWrites(reg.take()); len(w) == 0 {
			t.Errorf("push %s: no blob reached the registry", s)
		}

		// The engine and the registry agree on the digest.
		insp, err := f.cli.ImageInspect(context.Background(), built["build["+s+"]"]["imageID"])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(insp.RepoDigests, out["image"]) {
			t.Errorf("push %s: docker inspect RepoDigests %v lacks %s", s, insp.RepoDigests, out["image"])
		}
		for _, tag := range []string{"1.2.0", "git-" + f.commits[s][:12]} {
			ref, _ := name.NewTag(repo + ":" + tag)
			desc, err := remote.Head(ref)
			if err != nil {
				t.Fatalf("registry HEAD %s: %v", ref, err)
			}
			if got := repo + "@" + desc.Digest.String(); got != out["image"] {
				t.Errorf("registry has %s at %s, the stage says %s", got, tag, out["image"])
			}
			img, _ := remote.Image(ref)
			if cfg, _ := img.ConfigName(); cfg.String() != insp.ID {
				t.Errorf("registry image %s has config %s, want the built image %s", ref, cfg, insp.ID)
			}
		}
		images[s] = out["image"]
	}

	// Again: the registry holds every tag, so nothing is written.
	for _, s := range parts.Services {
		out, log, err := f.push(t, s, "1.2.0", built)
		if err != nil {
			t.Fatalf("second push %s: %v\n%s", s, err, log)
		}
		if out["image"] != images[s] || out["pushed"] != "false" {
			t.Errorf("second push %s: outputs %v, want %s not pushed", s, out, images[s])
		}
		if w := reg.take(); len(w) != 0 {
			t.Errorf("second push %s wrote to the registry: %v", s, w)
		}
		if !strings.Contains(log, "nothing uploaded") {
			t.Errorf("second push %s: log does not say it skipped the upload:\n%s", s, log)
		}
	}

	// A new version of the same commit: the version tag is added by digest,
	// one manifest PUT, no blob.
	out, log, err := f.push(t, "api", "1.3.0", built)
	if err != nil {
		t.Fatalf("push of a new version: %v\n%s", err, log)
	}
	if out["image"] != images["api"] || out["pushed"] != "false" {
		t.Errorf("new version push: outputs %v, want %s not pushed", out, images["api"])
	}
	want := []string{"PUT /v2/" + f.pipeline + "/api/manifests/1.3.0"}
	if w := reg.take(); !slices.Equal(w, want) {
		t.Errorf("new version push wrote %v, want %v", w, want)
	}

	// Without upstream outputs the image is found by its labels.
	out, log, err = f.push(t, "web", "1.2.0", nil)
	if err != nil || out["image"] != images["web"] {
		t.Errorf("push without inputs: %v, %v, want %s\n%s", out, err, images["web"], log)
	}
}

func TestPushRefusesToMoveAVersionTag(t *testing.T) {
	parts.RequireRegistry(t, parts.Registry)
	f := newFixture(t, parts.Registry)
	built := f.build(t, "auth", "api")
	if _, log, err := f.push(t, "auth", "1.2.0", built); err != nil {
		t.Fatalf("push auth: %v\n%s", err, log)
	}
	// api's image under auth's name and version: the tag holds another image.
	api := f.spec.Services["api"]
	api.Image = f.spec.Services["auth"].Image
	f.spec.Services["api"] = api
	_, _, err := f.push(t, "api", "1.2.0", built)
	if err == nil || !strings.Contains(err.Error(), "the tag already holds another image") || !stages.IsPermanent(err) {
		t.Fatalf("push over a published version: %v, want a permanent refusal", err)
	}
}

func TestPushWithCredentials(t *testing.T) {
	parts.RequireRegistry(t, parts.AuthRegistry)
	f := newFixture(t, parts.AuthRegistry)
	built := f.build(t, "auth")
	secrets := []string{parts.AuthRegistryPass, base64.StdEncoding.EncodeToString([]byte(parts.AuthRegistryUser + ":" + parts.AuthRegistryPass))}
	noSecret := func(t *testing.T, what string, texts ...string) {
		t.Helper()
		for _, text := range texts {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("%s contains the password:\n%s", what, text)
				}
			}
		}
	}
	// No credentials from a Docker config this test does not control.
	t.Setenv("DOCKER_CONFIG", t.TempDir())

	t.Run("anonymous is refused", func(t *testing.T) {
		t.Setenv(EnvUser, "")
		t.Setenv(EnvPassword, "")
		_, _, err := f.push(t, "auth", "1.2.0", built)
		if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") || !stages.IsPermanent(err) {
			t.Fatalf("anonymous push: %v, want a permanent UNAUTHORIZED", err)
		}
		if want := "registry " + parts.AuthRegistry + " wants credentials and none were found"; !strings.Contains(err.Error(), want) {
			t.Errorf("anonymous push: error %q does not say %q", err, want)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		t.Setenv(EnvUser, parts.AuthRegistryUser)
		t.Setenv(EnvPassword, "wrong-"+parts.AuthRegistryPass)
		out, log, err := f.push(t, "auth", "1.2.0", built)
		if err == nil {
			t.Fatalf("push with a wrong password succeeded: %v", out)
		}
		want := "look up " + parts.AuthRegistry + "/" + f.pipeline + "/auth:1.2.0"
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "UNAUTHORIZED") || !stages.IsPermanent(err) {
			t.Errorf("wrong password: error %q, want a permanent one with %q and UNAUTHORIZED", err, want)
		}
		if strings.Contains(err.Error(), "wrong-") {
			t.Errorf("error shows the wrong password: %v", err)
		}
		noSecret(t, "the log or error", log, err.Error())
	})

	t.Run("from the environment", func(t *testing.T) {
		t.Setenv(EnvUser, parts.AuthRegistryUser)
		t.Setenv(EnvPassword, parts.AuthRegistryPass)
		out, log, err := f.push(t, "auth", "1.2.0", built)
		if err != nil {
			t.Fatalf("push: %v\n%s", err, log)
		}
		if out["pushed"] != "true" || !strings.HasPrefix(out["image"], parts.AuthRegistry+"/"+f.pipeline+"/auth@sha256:") {
			t.Errorf("outputs %v, want a push to the protected registry", out)
		}
		noSecret(t, "the log", log)
		noSecret(t, "the outputs", fmt.Sprint(out))
		ref, _ := name.NewTag(parts.AuthRegistry + "/" + f.pipeline + "/auth:1.2.0")
		desc, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: parts.AuthRegistryUser, Password: parts.AuthRegistryPass}))
		if err != nil || parts.AuthRegistry+"/"+f.pipeline+"/auth@"+desc.Digest.String() != out["image"] {
			t.Errorf("registry says %v (%v), the stage says %s", desc, err, out["image"])
		}
	})

	t.Run("from the docker config", func(t *testing.T) {
		t.Setenv(EnvUser, "")
		t.Setenv(EnvPassword, "")
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(parts.AuthRegistryUser + ":" + parts.AuthRegistryPass))
		config := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, parts.AuthRegistry, auth)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", dir)
		// A new version of the pushed image: probed and tagged in the
		// registry with the config's credentials.
		out, log, err := f.push(t, "auth", "1.3.0", built)
		if err != nil {
			t.Fatalf("push: %v\n%s", err, log)
		}
		if out["pushed"] != "false" || !strings.Contains(out["tags"], ":1.3.0") {
			t.Errorf("outputs %v, want the new tag added without an upload", out)
		}
		noSecret(t, "the log", log)

		// Under a new name: the engine pushes with the config's credentials.
		svc := f.spec.Services["auth"]
		svc.Image = f.pipeline + "/auth-from-config"
		f.spec.Services["auth"] = svc
		out, log, err = f.push(t, "auth", "1.3.0", built)
		if err != nil {
			t.Fatalf("push: %v\n%s", err, log)
		}
		if out["pushed"] != "true" || !strings.HasPrefix(out["image"], parts.AuthRegistry+"/"+svc.Image+"@sha256:") {
			t.Errorf("outputs %v, want an engine push to %s", out, svc.Image)
		}
		noSecret(t, "the log", log)
	})

	t.Run("from a credential helper", func(t *testing.T) {
		t.Setenv(EnvUser, "")
		t.Setenv(EnvPassword, "")
		helper := parts.NewCredentialHelper(t, "fixture", map[string]parts.HelperLogin{
			parts.AuthRegistry: {Username: parts.AuthRegistryUser, Secret: parts.AuthRegistryPass},
		})
		t.Setenv("DOCKER_CONFIG", helper.Config)
		t.Setenv("PATH", helper.Path())
		// Under a name of its own: the probe and the engine's upload both
		// need the helper's credentials.
		svc := f.spec.Services["auth"]
		svc.Image = f.pipeline + "/auth-from-helper"
		f.spec.Services["auth"] = svc
		out, log, err := f.push(t, "auth", "1.4.0", built)
		if err != nil {
			t.Fatalf("push: %v\n%s", err, log)
		}
		if out["pushed"] != "true" || !strings.HasPrefix(out["image"], parts.AuthRegistry+"/"+svc.Image+"@sha256:") {
			t.Errorf("outputs %v, want an engine push to %s", out, svc.Image)
		}
		if calls := helper.Calls(t); !slices.Contains(calls, "get "+parts.AuthRegistry) {
			t.Errorf("the helper ran %q, want a get of %s", calls, parts.AuthRegistry)
		}
		noSecret(t, "the log", log)
		noSecret(t, "the outputs", fmt.Sprint(out))
	})
}

// BenchmarkBuildPush measures docker-build then docker-push of the three
// fixture services, each stage fanned out over the services at once as the
// executor runs them. cold: a pipeline the engine and registry have not
// seen (the engine's layer cache still holds the unchanged steps); warm: the
// same pipeline again, which reuses the images and uploads nothing.
//
//	go test -run '^$' -bench BuildPush -benchtime 3x ./stages/dockerpush/
func BenchmarkBuildPush(b *testing.B) {
	parts.RequireRegistry(b, parts.Registry)
	pushAll := func(f *fixture, built map[string]stages.Outputs) {
		var wg sync.WaitGroup
		for _, s := range parts.Services {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, log, err := f.push(b, s, "1.0.0", built); err != nil {
					b.Errorf("push %s: %v\n%s", s, err, log)
				}
			}()
		}
		wg.Wait()
	}
	b.Run("cold", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			f := newFixture(b, parts.Registry)
			b.StartTimer()
			pushAll(f, f.build(b, parts.Services...))
		}
	})
	b.Run("warm", func(b *testing.B) {
		f := newFixture(b, parts.Registry)
		pushAll(f, f.build(b, parts.Services...))
		b.ResetTimer()
		for range b.N {
			pushAll(f, f.build(b, parts.Services...))
		}
	})
}
