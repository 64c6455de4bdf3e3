package registry

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
)

// TestChainOrder checks the chain's order without Docker: the pipeline's
// variables (for its registry only), then the Docker config's credHelpers
// entry, its credsStore, its auths entry, then none.
func TestChainOrder(t *testing.T) {
	const reg = "127.0.0.1:5001"
	basic := func(user, pass string) string {
		return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	}
	helper := parts.NewCredentialHelper(t, "fixture", map[string]parts.HelperLogin{
		reg:             {Username: "helper-user", Secret: "helper-secret"},
		"token.example": {Username: "<token>", Secret: "identity-token-1"},
	})
	// A second helper, for credsStore.
	store := parts.NewCredentialHelper(t, "store", map[string]parts.HelperLogin{
		reg: {Username: "store-user", Secret: "store-secret"},
	})
	path := helper.Dir + string(os.PathListSeparator) + store.Dir
	auths := `"auths": {"` + reg + `": {"auth": "` + basic("file-user", "file:pass") + `"}}`
	tests := []struct {
		name     string
		registry string // reg when empty
		config   string // the Docker config's content, "" for none
		env      map[string]string
		want     Credentials
		wantErr  string
	}{
		{name: "nothing anywhere", want: Credentials{Registry: reg}},
		{name: "variables for the pipeline's registry win over the config",
			config: `{` + auths + `, "credHelpers": {"` + reg + `": "fixture"}}`,
			env:    map[string]string{EnvUser: "carol", EnvPassword: "pw"},
			want:   Credentials{Registry: reg, From: EnvUser + " and " + EnvPassword, Username: "carol", Password: "pw"}},
		{name: "variables are not another registry's", registry: "127.0.0.1:5999",
			config: `{"auths": {"127.0.0.1:5999": {"username": "bob", "password": "pw2"}}}`,
			env:    map[string]string{EnvUser: "carol", EnvPassword: "pw"},
			want:   Credentials{Registry: "127.0.0.1:5999", From: "CONFIG", Username: "bob", Password: "pw2"}},
		{name: "credHelpers win over credsStore and auths",
			config: `{` + auths + `, "credsStore": "store", "credHelpers": {"` + reg + `": "fixture"}}`,
			want:   Credentials{Registry: reg, From: "credential helper docker-credential-fixture", Username: "helper-user", Password: "helper-secret"}},
		{name: "credsStore wins over auths",
			config: `{` + auths + `, "credsStore": "store", "credHelpers": {"other:1": "fixture"}}`,
			want:   Credentials{Registry: reg, From: "credential helper docker-credential-store", Username: "store-user", Password: "store-secret"}},
		{name: "a helper without an entry is none, as with docker", registry: "127.0.0.1:5999",
			config: `{"auths": {"127.0.0.1:5999": {"username": "bob", "password": "pw2"}}, "credsStore": "fixture"}`,
			want:   Credentials{Registry: "127.0.0.1:5999"}},
		{name: "a helper's identity token", registry: "token.example",
			config: `{"credHelpers": {"token.example": "fixture"}}`,
			want:   Credentials{Registry: "token.example", From: "credential helper docker-credential-fixture", IdentityToken: "identity-token-1"}},
		{name: "auths entry", config: `{` + auths + `}`,
			want: Credentials{Registry: reg, From: "CONFIG", Username: "file-user", Password: "file:pass"}},
		{name: "auths entry under a URL key",
			config: `{"auths": {"https://` + reg + `/v2/": {"username": "bob", "password": "pw"}}}`,
			want:   Credentials{Registry: reg, From: "CONFIG", Username: "bob", Password: "pw"}},
		{name: "no entry", config: `{"auths": {"other:5000": {"auth": "` + basic("a", "b") + `"}}}`,
			want: Credentials{Registry: reg}},
		{name: "bad base64", config: `{"auths": {"` + reg + `": {"auth": "!!s3cret"}}}`,
			wantErr: "auth of " + reg + " is not base64 of user:password"},
		{name: "bad JSON", config: `{"auths": {"` + reg + `": {"password": "s3cret"`, wantErr: "invalid JSON"},
		{name: "a helper that is not on PATH", config: `{"credHelpers": {"` + reg + `": "absent"}}`,
			wantErr: "credential helper docker-credential-absent: not found in PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "config.json")
			if tt.config != "" {
				if err := os.WriteFile(config, []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{"DOCKER_CONFIG": dir, "PATH": path}
			for k, v := range tt.env {
				env[k] = v
			}
			ch := Chain{Pipeline: reg, Getenv: func(k string) string { return env[k] }}
			got, err := ch.Lookup(context.Background(), cmpOr(tt.registry, reg))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Lookup error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.From == "CONFIG" {
				tt.want.From = config
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("credentials (-want +got):\n%s", diff)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestChainHome reads $HOME/.docker/config.json when DOCKER_CONFIG is
// unset, and nothing when HOME is unset too.
func TestChainHome(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(`{"auths": {"r.example": {"username": "u", "password": "p"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Chain{Getenv: func(k string) string { return map[string]string{"HOME": home}[k] }}.Lookup(context.Background(), "r.example")
	if err != nil || got.Username != "u" {
		t.Errorf("with HOME: %+v, %v; want u's", got, err)
	}
	got, err = Chain{Getenv: func(string) string { return "" }}.Lookup(context.Background(), "r.example")
	if err != nil || !got.Anonymous() {
		t.Errorf("without HOME: %+v, %v; want none", got, err)
	}
}

// TestChainHelperHangs bounds a helper that never answers.
func TestChainHelperHangs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-hang"), []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"credsStore": "hang"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DOCKER_CONFIG": dir, "PATH": dir + ":/usr/bin:/bin"}
	ch := Chain{Getenv: func(k string) string { return env[k] }, HelperTimeout: 300 * time.Millisecond}
	began := time.Now()
	_, err := ch.Lookup(context.Background(), "r.example")
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "docker-credential-hang get: no answer within 300ms") {
		t.Errorf("Lookup error = %v, want the helper named with its bound", err)
	}
	if took > 3*time.Second {
		t.Errorf("Lookup took %s with a helper bound of 300ms", took)
	}
}

// TestCredentialsForms checks that both forms carry the same credentials
// and that Secrets covers every form of them.
func TestCredentialsForms(t *testing.T) {
	c := Credentials{Registry: "127.0.0.1:5001", Username: "alice", Password: "s3cret-pass"}
	ac, err := registry.DecodeAuthConfig(c.EngineAuth())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(registry.AuthConfig{Username: "alice", Password: "s3cret-pass", ServerAddress: "127.0.0.1:5001"}, *ac); diff != "" {
		t.Errorf("X-Registry-Auth (-want +got):\n%s", diff)
	}
	cfg, err := c.Authenticator().Authorization()
	if err != nil || cfg.Username != "alice" || cfg.Password != "s3cret-pass" {
		t.Errorf("authenticator: %+v, %v", cfg, err)
	}
	if anon, err := (Credentials{}).Authenticator().Authorization(); err != nil || anon.Username != "" {
		t.Errorf("anonymous authenticator: %+v, %v", anon, err)
	}
	if ac, err := registry.DecodeAuthConfig((Credentials{}).EngineAuth()); err != nil || *ac != (registry.AuthConfig{}) {
		t.Errorf("anonymous X-Registry-Auth: %+v, %v; want an empty object", ac, err)
	}
	cl := &Client{found: map[string]Credentials{c.Registry: c}, secrets: c.Secrets()}
	echo := "GET /v2/: 500: Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret-pass")) +
		" X-Registry-Auth: " + c.EngineAuth() + " password s3cret-pass"
	err = cl.Redact(errorString(echo))
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), c.EngineAuth()) || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte("alice:s3cret-pass"))) {
		t.Errorf("redacted error still holds a secret: %v", err)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
