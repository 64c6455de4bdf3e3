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
	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/stages"
)

func TestRegistryAuth(t *testing.T) {
	const ref = "127.0.0.1:5001/sweepboard/api@sha256:0123456789012345678901234567890123456789012345678901234567890123"
	userPass := base64.StdEncoding.EncodeToString([]byte("alice:s3cret:with:colons"))
	tests := []struct {
		name    string
		config  string // "" for no config file
		env     map[string]string
		want    registry.AuthConfig
		wantErr string
	}{
		{name: "no config file"},
		{name: "env for the pipeline's registry", config: `{"auths": {"127.0.0.1:5001": {"auth": "` + userPass + `"}}}`,
			env:  map[string]string{"RELEASE_REGISTRY_USER": "carol", "RELEASE_REGISTRY_PASSWORD": "pw"},
			want: registry.AuthConfig{Username: "carol", Password: "pw", ServerAddress: "127.0.0.1:5001"}},
		{name: "env for another registry", config: `{"auths": {"127.0.0.1:5001": {"auth": "` + userPass + `"}}}`,
			env:  map[string]string{"RELEASE_REGISTRY_USER": "carol", "RELEASE_REGISTRY_PASSWORD": "pw", "PIPELINE_REGISTRY": "127.0.0.1:5000"},
			want: registry.AuthConfig{Username: "alice", Password: "s3cret:with:colons", ServerAddress: "127.0.0.1:5001"}},
		{name: "no entry", config: `{"auths": {"other:5000": {"auth": "` + userPass + `"}}}`},
		{name: "auth field", config: `{"auths": {"127.0.0.1:5001": {"auth": "` + userPass + `"}}}`,
			want: registry.AuthConfig{Username: "alice", Password: "s3cret:with:colons", ServerAddress: "127.0.0.1:5001"}},
		{name: "url key", config: `{"auths": {"https://127.0.0.1:5001/v2/": {"username": "bob", "password": "pw"}}}`,
			want: registry.AuthConfig{Username: "bob", Password: "pw", ServerAddress: "127.0.0.1:5001"}},
		{name: "bad base64", config: `{"auths": {"127.0.0.1:5001": {"auth": "!!"}}}`,
			wantErr: "auth of 127.0.0.1:5001 is not base64 of user:password"},
		{name: "bad json", config: `{"auths": `, wantErr: "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{"DOCKER_CONFIG": dir}
			for k, v := range tt.env {
				env[k] = v
			}
			pipelineRegistry := "127.0.0.1:5001"
			if r := env["PIPELINE_REGISTRY"]; r != "" {
				pipelineRegistry = r
			}
			got, err := registryAuth(ref, pipelineRegistry, func(k string) string { return env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("registryAuth error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ac registry.AuthConfig
			if got != "" {
				dec, err := registry.DecodeAuthConfig(got)
				if err != nil {
					t.Fatal(err)
				}
				ac = *dec
			}
			if diff := cmp.Diff(tt.want, ac); diff != "" {
				t.Errorf("auth (-want +got):\n%s", diff)
			}
		})
	}
}

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
