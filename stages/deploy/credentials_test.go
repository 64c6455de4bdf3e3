package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
)

// TestDeployCredentialHelper deploys, on the second engine, an image of the
// htpasswd-protected registry that engine has never had, with credentials
// that only a credential helper of the Docker config holds: the engine's
// pull and the retag in the registry both get them from the helper. With
// no credentials anywhere, the deploy fails naming the registry.
func TestDeployCredentialHelper(t *testing.T) {
	needParts(t, host1, host2)
	reg := envOr("RELEASE_TEST_AUTH_REGISTRY", "127.0.0.1:5001")
	user := envOr("RELEASE_TEST_AUTH_REGISTRY_USER", "release-test")
	pass := envOr("RELEASE_TEST_AUTH_REGISTRY_PASSWORD", "release-test-password")
	needRegistry(t, reg)
	push, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: user, Password: pass, ServerAddress: reg})
	if err != nil {
		t.Fatal(err)
	}
	// Built on host1 and pushed there; host2 has never seen this version.
	version := fmt.Sprintf("helper-%d", time.Now().UnixNano())
	ref := pushTo(t, reg, push, "auth", version, false)
	cli2 := dockerClient(t, host2)
	if _, err := cli2.ImageInspect(context.Background(), ref); err == nil {
		t.Fatalf("%s is on %s already", ref, host2)
	}
	t.Cleanup(func() {
		cli2.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})

	environment := envName("t-helper")
	spec := testSpec(t, environment, []string{host2}, false)
	spec.Services = map[string]stages.Service{"auth": spec.Services["auth"]}
	spec.Registry = stages.ImageRegistry{URL: reg, Insecure: true}
	s := &Stage{StopTimeout: time.Second}
	t.Setenv("RELEASE_REGISTRY_USER", "")
	t.Setenv(stages.EnvRegistryPassword, "")

	t.Setenv("DOCKER_CONFIG", t.TempDir())
	r := deploy(t, s, spec, environment, version, map[string]string{"auth": ref})
	if r.err == nil {
		t.Fatal("deploy without credentials succeeded")
	}
	if want := "registry " + reg + " wants credentials and none were found"; !strings.Contains(r.err.Error(), want) {
		t.Errorf("error %q does not say %q", r.err, want)
	}
	if strings.Contains(r.err.Error(), pass) || strings.Contains(r.log, pass) {
		t.Errorf("the password shows in the error or log")
	}

	helper := parts.NewCredentialHelper(t, "fixture", map[string]parts.HelperLogin{reg: {Username: user, Secret: pass}})
	t.Setenv("DOCKER_CONFIG", helper.Config)
	t.Setenv("PATH", helper.Path())
	r = deploy(t, s, spec, environment, version, map[string]string{"auth": ref})
	if r.err != nil {
		t.Fatalf("deploy with the helper's credentials: %v", r.err)
	}
	if strings.Contains(r.log, pass) {
		t.Errorf("the password shows in the log")
	}
	checkDeployed(t, spec, environment, []string{host2}, map[string]string{"auth": ref})
	if calls := helper.Calls(t); !slices.Contains(calls, "get "+reg) {
		t.Errorf("the helper ran %q, want a get of %s", calls, reg)
	}
	// The deploy tagged the image with the environment, by digest.
	tag, err := name.NewTag(repoOf(ref)+":"+environment, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(tag, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	if err != nil || desc.Digest.String() != digestOf(ref) {
		t.Errorf("HEAD %s = %v, %v; want %s", tag, desc, err, digestOf(ref))
	}
}

// TestRetagCredentialHelper retags on the protected registry with the
// credentials of a credential helper, and looks the digest up.
func TestRetagCredentialHelper(t *testing.T) {
	reg := envOr("RELEASE_TEST_AUTH_REGISTRY", "127.0.0.1:5001")
	user := envOr("RELEASE_TEST_AUTH_REGISTRY_USER", "release-test")
	pass := envOr("RELEASE_TEST_AUTH_REGISTRY_PASSWORD", "release-test-password")
	needRegistry(t, registryAddr)
	needRegistry(t, reg)
	needDockerCLI(t)
	ctx := context.Background()
	id := unique("helper")
	src := scratchImage(t, "retagtest/auth", id, "helper "+id)
	srcRef, err := name.NewDigest(src, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(srcRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	basic := remote.WithAuth(&authn.Basic{Username: user, Password: pass})
	dst, err := name.NewTag(reg+"/retagtest/auth:"+id, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img, remote.WithContext(ctx), basic); err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
	ref := reg + "/retagtest/auth@" + digestOf(src)
	images := map[string]string{"auth": ref}
	spec := &stages.Spec{Name: "retagtest", Registry: stages.ImageRegistry{URL: reg, Insecure: true}}

	helper := parts.NewCredentialHelper(t, "fixture", map[string]parts.HelperLogin{reg: {Username: user, Secret: pass}})
	env := map[string]string{"DOCKER_CONFIG": helper.Config, "PATH": helper.Path()}
	getenv := func(k string) string { return env[k] }
	tag := "staging-" + id
	if err := Retag(ctx, spec, images, []string{tag}, getenv); err != nil {
		t.Fatalf("retag with the helper's credentials: %v", err)
	}
	if got := headDigest(t, reg+"/retagtest/auth:"+tag, basic); got != digestOf(src) {
		t.Errorf("HEAD %s:%s = %s, want %s", reg+"/retagtest/auth", tag, got, digestOf(src))
	}
	if missing, err := Missing(ctx, spec, images, getenv); err != nil || len(missing) != 0 {
		t.Errorf("Missing with the helper's credentials = %v, %v; want none", missing, err)
	}
	if calls := helper.Calls(t); len(calls) == 0 || calls[0] != "get "+reg {
		t.Errorf("the helper ran %q, want a get of %s", calls, reg)
	}

	// No credentials anywhere: the error names the registry.
	err = Retag(ctx, spec, images, []string{tag}, func(k string) string { return map[string]string{"DOCKER_CONFIG": t.TempDir()}[k] })
	if want := "registry " + reg + " wants credentials and none were found"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("retag without credentials: %v, want an error saying %q", err, want)
	}
}
