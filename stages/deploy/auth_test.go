package deploy

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/sweepboard/release/stages"
)

// TestDeployPrivateRegistry deploys from the htpasswd-protected registry:
// the engine pulls with the credentials of the Docker config.
func TestDeployPrivateRegistry(t *testing.T) {
	needParts(t, host1)
	reg := envOr("RELEASE_TEST_AUTH_REGISTRY", "127.0.0.1:5001")
	user := envOr("RELEASE_TEST_AUTH_REGISTRY_USER", "release-test")
	pass := envOr("RELEASE_TEST_AUTH_REGISTRY_PASSWORD", "release-test-password")
	ac := registry.AuthConfig{Username: user, Password: pass, ServerAddress: reg}
	auth, err := registry.EncodeAuthConfig(ac)
	if err != nil {
		t.Fatal(err)
	}
	cli := dockerClient(t, host1)
	_, err = cli.RegistryLogin(context.Background(), ac)
	need(t, "registry "+reg, err)

	// An image no engine has seen: an engine that has a digest's content
	// already may "pull" it without asking the registry.
	version := fmt.Sprintf("private-%d", time.Now().UnixNano())
	ref := pushTo(t, reg, auth, "auth", version, false)
	img, err := cli.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageRemove(context.Background(), img.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
		t.Fatalf("remove image %s: %v", img.ID, err)
	}
	t.Cleanup(func() {
		cli.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})

	environment := envName("t-private")
	spec := testSpec(t, environment, []string{host1}, false)
	spec.Services = map[string]stages.Service{"auth": spec.Services["auth"]}
	s := &Stage{StopTimeout: time.Second}

	t.Setenv("DOCKER_CONFIG", t.TempDir())
	r := deploy(t, s, spec, environment, version, map[string]string{"auth": ref})
	if r.err == nil {
		t.Fatal("deploy without credentials succeeded")
	}
	t.Logf("without credentials: %v", r.err)
	if strings.Contains(r.err.Error(), pass) || strings.Contains(r.log, pass) {
		t.Errorf("the password shows in the error or log")
	}
	if want := "registry " + reg + " wants credentials and none were found"; !strings.Contains(r.err.Error(), want) {
		t.Errorf("error %q does not say %q", r.err, want)
	}

	dir := t.TempDir()
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths": {"`+reg+`": {"auth": "`+basic+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	r = deploy(t, s, spec, environment, version, map[string]string{"auth": ref})
	if r.err != nil {
		t.Fatalf("deploy with credentials: %v", r.err)
	}
	if strings.Contains(r.log, pass) {
		t.Errorf("the password shows in the log")
	}
	checkDeployed(t, spec, environment, []string{host1}, map[string]string{"auth": ref})
}
