package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
)

// TestContainerEnv: the order of a container's variables' sources, and
// what an error may say.
func TestContainerEnv(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	svcFile := file("svc.env", "# comment\n\nA=from-file\nB=from-file\nSPACED = x=y \n")
	envFile := file("env.env", "B=from-env-file\n")
	badFile := file("bad.env", "OK=1\nhunter2\n")
	vars := map[string]string{"DB_PASSWORD": "s3cret", "EMPTY": ""}
	lookup := func(name string) (string, bool) { v, ok := vars[name]; return v, ok }

	tests := []struct {
		name        string
		cfg         stages.ServiceConfig
		version     string
		env         []string
		secrets     []string
		err         string
		errHasNoArg string // text the error must not carry
	}{
		{
			name:    "version and environment",
			cfg:     stages.ServiceConfig{Env: map[string]string{"LOG": "info"}},
			version: "1.2.0",
			env:     []string{"LOG=info", "RELEASE_ENVIRONMENT=dev", "RELEASE_VERSION=1.2.0"},
		},
		{
			name: "no version for a build that is not a release",
			env:  []string{"RELEASE_ENVIRONMENT=dev"},
		},
		{
			name: "files, then env, then env_from, then release",
			cfg: stages.ServiceConfig{
				EnvFiles: []string{svcFile, envFile},
				Env:      map[string]string{"A": "from-env", "RELEASE_ENVIRONMENT": "mine"},
				EnvFrom:  []string{"DB_PASSWORD", "EMPTY"},
			},
			env:     []string{"A=from-env", "B=from-env-file", "DB_PASSWORD=s3cret", "EMPTY=", "RELEASE_ENVIRONMENT=dev", "SPACED= x=y "},
			secrets: []string{"s3cret"},
		},
		{
			name: "an env_from variable that is not set",
			cfg:  stages.ServiceConfig{EnvFrom: []string{"NOT_SET"}},
			err:  "env_from: variable NOT_SET is not set",
		},
		{
			name:        "a bad line names its place, not its text",
			cfg:         stages.ServiceConfig{EnvFiles: []string{badFile}},
			err:         badFile + ":2: not NAME=VALUE",
			errHasNoArg: "hunter2",
		},
		{
			name: "a missing file",
			cfg:  stages.ServiceConfig{EnvFiles: []string{filepath.Join(dir, "none.env")}},
			err:  "env_file: open " + filepath.Join(dir, "none.env"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, secrets, err := containerEnv(tt.cfg, "dev", tt.version, lookup)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one with %q", err, tt.err)
				}
				if tt.errHasNoArg != "" && strings.Contains(err.Error(), tt.errHasNoArg) {
					t.Errorf("error %q carries %q", err, tt.errHasNoArg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.env, env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.secrets, secrets); diff != "" {
				t.Errorf("secrets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunningServices(t *testing.T) {
	images := map[string]string{"api": "r/api@sha256:2", "web": "r/web@sha256:1", "auth": "r/auth@sha256:1", "db": "r/db@sha256:1"}
	lives := []target.Live{
		{Host: "h1", Service: "web", Container: "web-1", Digest: "r/web@sha256:1", Version: "1.2.0", State: "running", Config: "c1"},
		{Host: "h2", Service: "web", Container: "web-2", Digest: "r/web@sha256:1", Version: "1.2.0", State: "running", Config: "c1"},
		// Another image than the intended one: nothing is kept.
		{Host: "h1", Service: "api", Container: "api-1", Digest: "r/api@sha256:1", Version: "1.2.0", State: "running", Config: "c1"},
		// Two versions of one image: nothing is kept.
		{Host: "h1", Service: "auth", Container: "auth-1", Digest: "r/auth@sha256:1", Version: "1.1.0", State: "running", Config: "c1"},
		{Host: "h2", Service: "auth", Container: "auth-2", Digest: "r/auth@sha256:1", Version: "1.2.0", State: "running", Config: "c1"},
		// One version, two configurations (a rollout that stopped half way).
		{Host: "h1", Service: "db", Container: "db-1", Digest: "r/db@sha256:1", Version: "1.2.0", State: "running", Config: "c1"},
		{Host: "h2", Service: "db", Container: "db-2", Digest: "r/db@sha256:1", Version: "1.2.0", State: "running", Config: "c2"},
		{Host: "h1", Service: "stock", State: "missing"},
	}
	want := map[string]runningService{"web": {version: "1.2.0", config: "c1"}}
	if diff := cmp.Diff(want, runningServices(lives, images), cmp.AllowUnexported(runningService{})); diff != "" {
		t.Errorf("runningServices (-want +got):\n%s", diff)
	}
}
