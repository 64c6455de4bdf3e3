package exec_test

import (
	"encoding/base64"
	"strings"
	"testing"
)

// A command gets the pipeline's secrets in its environment, and what it
// prints of them reaches the run log hidden, in every form.
func TestSecretsHiddenInLog(t *testing.T) {
	const password, token = "reg-canary-2f9c1d7e", "gh-canary-88a0b3c4"
	t.Setenv("RELEASE_REGISTRY_PASSWORD", password)
	t.Setenv("GITHUB_TOKEN", token)
	t.Setenv("BASIC", base64.StdEncoding.EncodeToString([]byte("release:"+password)))
	s := load(t, "name: p\nstages:\n  run:\n    uses: exec\n    with: {command: [printenv, RELEASE_REGISTRY_PASSWORD, GITHUB_TOKEN, BASIC]}\n")
	log, err := run(t, s, "1.0.0")
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log)
	}
	for _, secret := range []string{password, token, base64.StdEncoding.EncodeToString([]byte("release:" + password))[4:20]} {
		if strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}
	if got := strings.Count(log, "***"); got != 3 {
		t.Errorf("log %q: %d secrets hidden, want 3 (the command did see them)", log, got)
	}
}
