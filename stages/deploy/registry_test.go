package deploy

// The tests of Retag and Missing run against the registries fixtures/up.sh
// starts: 127.0.0.1:5000 (no auth, delete enabled) and 127.0.0.1:5001
// (htpasswd). Their images are built FROM scratch with the docker CLI:
//
//	eval "$(fixtures/up.sh)"
//	go test -race -count=1 -run 'Retag|Missing' ./stages/deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sweepboard/release/stages"
)

// needRegistry checks that the registry at addr answers /v2/ with 200, or
// 401 when it wants credentials.
func needRegistry(tb testing.TB, addr string) {
	tb.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/v2/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
			err = fmt.Errorf("GET http://%s/v2/: %s", addr, resp.Status)
		}
	}
	need(tb, "registry "+addr, err)
}

// needDockerCLI checks the docker CLI and the engine at host1.
func needDockerCLI(tb testing.TB) {
	tb.Helper()
	out, err := exec.Command("docker", "-H", host1, "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		err = fmt.Errorf("docker -H %s version: %v: %s", host1, err, bytes.TrimSpace(out))
	}
	need(tb, "docker CLI and engine", err)
}

// docker runs the docker CLI against host1 and returns its stdout.
func docker(tb testing.TB, args ...string) string {
	tb.Helper()
	cmd := exec.Command("docker", append([]string{"-H", host1}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("docker %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

var pushedDigest = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)

// scratchImage builds an image FROM scratch holding the static test server
// and a payload file with the docker CLI, pushes it as repo:tag to the
// registry on 127.0.0.1:5000, removes the local copy and returns its digest
// reference. A payload of extra bytes is appended to the binary, so each
// image has a layer of its own the size of a small service.
func scratchImage(tb testing.TB, repo, tag, payload string) string {
	tb.Helper()
	bin, err := os.ReadFile(serverBinary(tb))
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	// Trailing bytes after an ELF image do not change how it runs.
	bin = append(bin, []byte("\n"+payload+"\n")...)
	files := map[string][]byte{
		"server":     bin,
		"payload":    []byte(payload + "\n"),
		"Dockerfile": []byte("FROM scratch\nCOPY server /server\nCOPY payload /payload\nEXPOSE 8080\nENTRYPOINT [\"/server\"]\n"),
	}
	for n, data := range files {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	ref := registryAddr + "/" + repo + ":" + tag
	docker(tb, "build", "-q", "-t", ref, dir)
	out := docker(tb, "push", ref)
	m := pushedDigest.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("docker push %s: no digest in its output:\n%s", ref, out)
	}
	docker(tb, "rmi", ref)
	return registryAddr + "/" + repo + "@" + m[1]
}

// unique is a name no earlier run of the tests used.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano())
}

func noEnv(string) string { return "" }

// rawManifest fetches the manifest ref names, with its media type.
func rawManifest(tb testing.TB, ref string, opts ...remote.Option) (body []byte, mediaType, digest string) {
	tb.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := remote.Get(r, opts...)
	if err != nil {
		tb.Fatalf("get %s: %v", ref, err)
	}
	return d.Manifest, string(d.MediaType), d.Digest.String()
}

// headDigest is the digest the registry answers a HEAD of ref with.
func headDigest(tb testing.TB, ref string, opts ...remote.Option) string {
	tb.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := remote.Head(r, opts...)
	if err != nil {
		tb.Fatalf("head %s: %v", ref, err)
	}
	return d.Digest.String()
}

func repoOf(ref string) string { return ref[:strings.LastIndex(ref, "@")] }

func digestOf(ref string) string { return ref[strings.LastIndex(ref, "@")+1:] }

func registrySpec(insecure bool) *stages.Spec {
	return &stages.Spec{Name: "retagtest", Registry: stages.ImageRegistry{URL: registryAddr, Insecure: insecure}}
}

func TestRetag(t *testing.T) {
	needRegistry(t, registryAddr)
	needDockerCLI(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ctx := context.Background()
	id := unique("retag")
	images := map[string]string{}
	for _, svc := range []string{"auth", "api", "web"} {
		images[svc] = scratchImage(t, "retagtest/"+svc, id, svc+" "+id)
	}
	spec := registrySpec(true)
	tags := []string{"staging-" + id, "v9.9.9-" + id}

	for round := 1; round <= 2; round++ { // the second round is a no-op
		if err := Retag(ctx, spec, images, tags, noEnv); err != nil {
			t.Fatalf("retag, round %d: %v", round, err)
		}
		for svc, ref := range images {
			want, wantType, _ := rawManifest(t, ref)
			sum := sha256.Sum256(want)
			if got := "sha256:" + hex.EncodeToString(sum[:]); got != digestOf(ref) {
				t.Fatalf("%s: manifest hashes to %s, want %s", svc, got, digestOf(ref))
			}
			for _, tag := range tags {
				tagged := repoOf(ref) + ":" + tag
				if got := headDigest(t, tagged); got != digestOf(ref) {
					t.Errorf("round %d: HEAD %s = %s, want %s", round, tagged, got, digestOf(ref))
				}
				body, mediaType, _ := rawManifest(t, tagged)
				if !bytes.Equal(body, want) {
					t.Errorf("round %d: manifest of %s differs from %s:\n%s", round, tagged, ref, cmp.Diff(string(want), string(body)))
				}
				if mediaType != wantType {
					t.Errorf("round %d: %s is a %s, want %s", round, tagged, mediaType, wantType)
				}
			}
		}
	}

	// A later promotion moves the tag to the newer release's digest.
	next := map[string]string{"api": scratchImage(t, "retagtest/api", id+"-next", "api next "+id)}
	if err := Retag(ctx, spec, next, tags[:1], noEnv); err != nil {
		t.Fatalf("retag the next release: %v", err)
	}
	if got, want := headDigest(t, repoOf(next["api"])+":"+tags[0]), digestOf(next["api"]); got != want {
		t.Errorf("after the next promotion %s:%s = %s, want %s", repoOf(next["api"]), tags[0], got, want)
	}
	if got, want := headDigest(t, repoOf(images["web"])+":"+tags[0]), digestOf(images["web"]); got != want {
		t.Errorf("web was not promoted, but its tag moved: %s, want %s", got, want)
	}
}

func TestRetagRejects(t *testing.T) {
	needRegistry(t, registryAddr)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	absent := registryAddr + "/retagtest/absent@sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name    string
		images  map[string]string
		wantErr string
	}{
		{name: "tag instead of digest", images: map[string]string{"api": registryAddr + "/retagtest/api:latest"}, wantErr: "is not a digest reference"},
		{name: "digest not in the registry", images: map[string]string{"api": absent}, wantErr: "retag " + absent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Retag(context.Background(), registrySpec(true), tt.images, []string{"staging"}, noEnv)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Retag error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMissing(t *testing.T) {
	needRegistry(t, registryAddr)
	needDockerCLI(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ctx := context.Background()
	id := unique("missing")
	images := map[string]string{
		"auth": scratchImage(t, "retagtest/auth", id, "auth "+id),
		"api":  scratchImage(t, "retagtest/api", id, "api "+id),
	}
	spec := registrySpec(true)

	got, err := Missing(ctx, spec, images, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string(nil), got); diff != "" {
		t.Errorf("Missing before the delete (-want +got):\n%s", diff)
	}

	d, err := name.NewDigest(images["api"], name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(d, remote.WithContext(ctx)); err != nil {
		t.Fatalf("delete %s (the registry must have delete enabled): %v", d, err)
	}
	got, err = Missing(ctx, spec, images, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"api " + images["api"]}, got); diff != "" {
		t.Errorf("Missing after deleting api's manifest (-want +got):\n%s", diff)
	}
	// A retag of a release with a deleted image fails and names it.
	err = Retag(ctx, spec, images, []string{"staging-" + id}, noEnv)
	if err == nil || !strings.Contains(err.Error(), images["api"]) {
		t.Errorf("Retag of a deleted image: error = %v, want one naming %s", err, images["api"])
	}

	if _, err := Missing(ctx, spec, map[string]string{"api": "not a reference"}, noEnv); err == nil {
		t.Error("Missing of a bad reference: no error")
	}
}

// TestRetagAuth retags on the htpasswd registry with credentials from
// RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD; without them or with
// a wrong password it fails, and the password is in no error.
func TestRetagAuth(t *testing.T) {
	authReg := envOr("RELEASE_TEST_AUTH_REGISTRY", "127.0.0.1:5001")
	user := envOr("RELEASE_TEST_AUTH_REGISTRY_USER", "release-test")
	pass := envOr("RELEASE_TEST_AUTH_REGISTRY_PASSWORD", "release-test-password")
	needRegistry(t, registryAddr)
	needRegistry(t, authReg)
	needDockerCLI(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials but the ones given
	ctx := context.Background()

	// Copy an image built on 127.0.0.1:5000 to the protected registry.
	id := unique("auth")
	src := scratchImage(t, "retagtest/auth", id, "private "+id)
	srcRef, err := name.NewDigest(src, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(srcRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	basic := remote.WithAuth(&authn.Basic{Username: user, Password: pass})
	dst, err := name.NewTag(authReg+"/retagtest/auth:"+id, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img, remote.WithContext(ctx), basic); err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
	ref := authReg + "/retagtest/auth@" + digestOf(src)
	images := map[string]string{"auth": ref}
	spec := &stages.Spec{Name: "retagtest", Registry: stages.ImageRegistry{URL: authReg, Insecure: true}}
	tag := "staging-" + id

	const wrong = "not-the-password-4f1c9a"
	for _, tt := range []struct {
		name string
		env  map[string]string
	}{
		{name: "no credentials"},
		{name: "wrong password", env: map[string]string{"RELEASE_REGISTRY_USER": user, "RELEASE_REGISTRY_PASSWORD": wrong}},
		{name: "wrong user", env: map[string]string{"RELEASE_REGISTRY_USER": "nobody", "RELEASE_REGISTRY_PASSWORD": pass}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			errs := map[string]error{}
			errs["Retag"] = Retag(ctx, spec, images, []string{tag}, getenv)
			_, errs["Missing"] = Missing(ctx, spec, images, getenv)
			for fn, err := range errs {
				if err == nil {
					t.Errorf("%s: no error", fn)
					continue
				}
				t.Logf("%s: %v", fn, err)
				if !strings.Contains(err.Error(), "unauthorized") {
					t.Errorf("%s: error %q does not say unauthorized", fn, err)
				}
				for _, secret := range []string{wrong, pass} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("%s: error %q shows the password", fn, err)
					}
				}
			}
		})
	}
	tagRef, err := name.NewTag(authReg+"/retagtest/auth:"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(tagRef, basic); err == nil {
		t.Fatalf("a retag without valid credentials created %s:%s", authReg, tag)
	}

	getenv := func(k string) string {
		return map[string]string{"RELEASE_REGISTRY_USER": user, "RELEASE_REGISTRY_PASSWORD": pass}[k]
	}
	if err := Retag(ctx, spec, images, []string{tag}, getenv); err != nil {
		t.Fatalf("retag with RELEASE_REGISTRY_USER/PASSWORD: %v", err)
	}
	if got := headDigest(t, authReg+"/retagtest/auth:"+tag, basic); got != digestOf(src) {
		t.Errorf("HEAD %s:%s = %s, want %s", authReg+"/retagtest/auth", tag, got, digestOf(src))
	}
	missing, err := Missing(ctx, spec, images, getenv)
	if err != nil || len(missing) != 0 {
		t.Errorf("Missing with credentials = %v, %v; want none", missing, err)
	}
}
