package exec_test

import (
	"encoding/base64"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/stages"
)

// Canary secrets of the process running the stage: release's own (the
// serve token, the store's password) and the pipeline's (registry password,
// GitHub token), plus a variable release knows nothing of.
var canaries = map[string]string{
	"RELEASE_SERVE_TOKEN":       "serve-canary-5d1e9a3b77",
	"GITHUB_TOKEN":              "gh-canary-88a0b3c4",
	"RELEASE_REGISTRY_PASSWORD": "reg-canary-2f9c1d7e",
	"PGPASSWORD":                "pg-canary-0c4e6a91",
	"RELEASE_STATE":             "postgres://release:state-canary-7b3f02@db.invalid/release",
	"UNRELATED_SECRET":          "other-canary-e41a",
}

func setCanaries(t *testing.T) {
	t.Helper()
	for k, v := range canaries {
		t.Setenv(k, v)
	}
	t.Setenv("LC_TIME", "C")
	t.Setenv("TZ", "UTC")
}

// environment parses what `env` printed.
func environment(t *testing.T, log string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("env printed %q", line)
		}
		vars[k] = v
	}
	return vars
}

// A command's environment is the allowlist, the node's RELEASE_*
// variables and its env: none of the process's secrets, nothing else.
func TestEnvironmentAllowlist(t *testing.T) {
	setCanaries(t)
	s := load(t, "name: p\nstages:\n  run:\n    uses: exec\n    with: {command: [env], env: {GREETING: hi}}\n")
	log, err := run(t, s, "1.0.0")
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	got := environment(t, log)
	var names []string
	for k := range got {
		names = append(names, k)
	}
	slices.Sort(names)
	var want []string
	for _, k := range []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR"} {
		if _, ok := os.LookupEnv(k); ok {
			want = append(want, k)
		}
	}
	want = append(want, "TZ", "LC_TIME", "GREETING",
		"RELEASE_RUN_ID", "RELEASE_VERSION", "RELEASE_NODE", "RELEASE_ITEM", "RELEASE_ENVIRONMENT")
	slices.Sort(want)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("the command's variables (-want +got):\n%s", diff)
	}
	for k, v := range canaries {
		if strings.Contains(log, v) || strings.Contains(log, k) {
			t.Errorf("the command saw %s:\n%s", k, log)
		}
	}
	if got["PATH"] != os.Getenv("PATH") || got["RELEASE_VERSION"] != "1.0.0" || got["GREETING"] != "hi" {
		t.Errorf("PATH, RELEASE_VERSION, GREETING = %q, %q, %q", got["PATH"], got["RELEASE_VERSION"], got["GREETING"])
	}
}

// A variable the stage names in env_from reaches the command; what the
// command prints of a secret reaches the run log hidden, in every form.
func TestEnvFromSecretsHiddenInLog(t *testing.T) {
	setCanaries(t)
	password := canaries["RELEASE_REGISTRY_PASSWORD"]
	basic := base64.StdEncoding.EncodeToString([]byte("release:" + password))
	t.Setenv("BASIC", basic)
	s := load(t, `name: p
stages:
  run:
    uses: exec
    with:
      command: [sh, -c, 'for v in RELEASE_SERVE_TOKEN GITHUB_TOKEN RELEASE_REGISTRY_PASSWORD BASIC PGPASSWORD RELEASE_STATE; do printenv $v; done; printf %s "$RELEASE_SERVE_TOKEN" | base64; echo ${#RELEASE_SERVE_TOKEN}; printenv UNRELATED_SECRET || echo no other']
      env_from: [RELEASE_SERVE_TOKEN, GITHUB_TOKEN, RELEASE_REGISTRY_PASSWORD, BASIC, PGPASSWORD, RELEASE_STATE]
`)
	log, err := run(t, s, "1.0.0")
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	token := canaries["RELEASE_SERVE_TOKEN"]
	// Base64 keeps what encodes the bytes around a secret: "release:"
	// before the password, nothing but padding after the token.
	want := strings.Join([]string{"***", "***", "***", "cmVsZWFzZTp***", "***", "postgres://release:***@db.invalid/release",
		"***c=", "23", "no other", ""}, "\n")
	if len(token) != 23 {
		t.Fatalf("the token canary has %d bytes", len(token))
	}
	if diff := cmp.Diff(want, log); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
	for _, secret := range []string{token, base64.StdEncoding.EncodeToString([]byte(token)), password, basic[4:20], "state-canary-7b3f02"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}
}

// A variable env_from names that is unset stops the stage before the
// command runs, with an error naming the variable.
func TestEnvFromUnset(t *testing.T) {
	path, _ := canary(t)
	s := load(t, "name: p\nstages:\n  run:\n    uses: exec\n    with: {command: [touch, "+path+"], env_from: [EXEC_TEST_UNSET]}\n")
	os.Unsetenv("EXEC_TEST_UNSET")
	_, err := run(t, s, "1.0.0")
	var se *stages.Error
	if err == nil || !errors.As(err, &se) || se.Retry || err.Error() != "with.env_from: EXEC_TEST_UNSET is not set in the environment of release" {
		t.Fatalf("run: %v, want a permanent error naming EXEC_TEST_UNSET", err)
	}
}
