package main

// TestSecretsEnvFrom deploys a fixture service whose secret comes from
// env_from: a variable of the release process, named in the file, its value
// only in the process's environment. The service reports the SHA-256 of
// what it got (fixtures/services: /secret), through Caddy, so the test sees
// it arrived without printing it; then every place release writes is
// scanned for it: output, run logs, the store's files, the container's and
// image's labels, the errors of a deploy that fails with the secret set,
// and of one where the variable is missing (named, never a value).
//
//	eval "$(fixtures/up.sh)"
//	go test -count=1 -run TestSecretsEnvFrom -v ./cmd/release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
)

const envFromPipeline = `
name: %[1]s
registry: {url: 127.0.0.1:5000, insecure: true}
repos:
  auth: {url: %[2]s/auth.git}
services:
  auth:
    repo: auth
    image: %[1]s/auth
    port: 8080
    health: {http: /healthz, timeout: 20s}
    env: {REPORT_SECRET: AUTH_DB_PASSWORD}
    env_from: [AUTH_DB_PASSWORD]
environments:
  dev:
    hosts: [%[3]s]
    proxy: {caddy: "http://127.0.0.1:2019", listen: {auth: "%[4]s"}}
    services:
      auth: {env: {FAIL_HEALTH: "%[5]s"}}
stages:
  build:  {uses: docker-build, for_each: service}
  push:   {uses: docker-push, for_each: service, needs: [build]}
  deploy: {uses: deploy, environment: dev, needs: [push], with: {drain: 100ms}}
`

func TestSecretsEnvFrom(t *testing.T) {
	needFlowParts(t)
	bin := buildRelease(t)
	dir := t.TempDir()
	name := fmt.Sprintf("envfrom%d", os.Getpid())
	reposDir, _ := parts.NewRepos(t)
	listen := parts.ListenAddr(t)
	secret := canary("DbCanary")
	sc := &scanner{needles: canaryForms("env_from secret", secret, ""), places: map[string]bool{}}

	docker := func(args ...string) string {
		out, _ := exec.Command("docker", append([]string{"-H", parts.DockerHost}, args...)...).Output()
		return strings.TrimSpace(string(out))
	}
	cleanup := func() {
		parts.RemoveMade(parts.DockerHost, name, "")
		req, _ := http.NewRequest(http.MethodDelete, "http://127.0.0.1:2019/id/release_"+name+"_dev_auth", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	t.Cleanup(cleanup)
	cleanup()

	write := func(failHealth string) {
		y := fmt.Sprintf(envFromPipeline, name, reposDir, parts.DockerHost, listen, failHealth)
		if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	release := func(withSecret bool, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "RELEASE_") || strings.HasPrefix(kv, "AUTH_DB_PASSWORD=")
		})
		cmd.Env = append(cmd.Env, "NO_COLOR=1", "RELEASE_USER=secrets-test")
		if withSecret {
			cmd.Env = append(cmd.Env, "AUTH_DB_PASSWORD="+secret)
		}
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		r := resultOf(t, args, cmd.Run(), &stdout, &stderr)
		line := "release " + strings.Join(args, " ")
		sc.scan("stdout of "+line, stdout.Bytes())
		sc.scan("stderr of "+line, stderr.Bytes())
		scanDir(sc, dir)
		return r
	}
	want := func(code int, withSecret bool, args ...string) result {
		t.Helper()
		r := release(withSecret, args...)
		if r.code != code {
			t.Fatalf("release %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
		}
		return r
	}

	// The secret reaches the container.
	write("")
	r := want(0, true, "-v", "run", "--yes")
	id := r.id()
	resp, err := http.Get("http://" + listen + "/secret")
	if err != nil {
		t.Fatalf("GET /secret through Caddy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := strings.TrimSpace(string(body)), fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(secret))); got != want {
		t.Fatalf("the service reports %q, want %q: env_from did not pass the secret", got, want)
	}
	want(0, true, "logs", id)
	want(0, true, "runs", "show", id, "-o", "json")
	want(0, true, "status", "-o", "json")

	// A variable that is not set fails the deploy naming it.
	r = want(exitFailed, false, "-v", "run", "--yes")
	if !strings.Contains(r.stderr, "AUTH_DB_PASSWORD") || !strings.Contains(r.stderr, "not set") {
		t.Errorf("a missing env_from variable: the error does not name it\n%s", r)
	}
	// A deploy that fails its health check with the secret set: the old
	// container keeps serving, and the error holds no value.
	write("1")
	r = want(exitFailed, true, "-v", "run", "--yes")
	if resp, err := http.Get("http://" + listen + "/secret"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after a failed deploy the old container does not answer: %v", err)
	} else {
		resp.Body.Close()
	}
	v := struct {
		Stages []struct{ Error string } `json:"stages"`
	}{}
	if err := json.Unmarshal([]byte(want(0, true, "runs", "show", r.id(), "-o", "json").stdout), &v); err != nil {
		t.Fatal(err)
	}
	for _, n := range v.Stages {
		sc.scan("error text of run "+r.id(), []byte(n.Error))
	}
	want(0, true, "logs", r.id())

	// Labels of what release made: containers, images, the network. The
	// container's Config.Env holds the secret by design; nothing else may.
	for _, kind := range []string{"container", "image", "network"} {
		var ids []string
		switch kind {
		case "container":
			ids = strings.Fields(docker("ps", "-aq", "--filter", "label=release.pipeline="+name))
		case "image":
			ids = strings.Fields(docker("images", "-q", "--filter", "label=release.pipeline="+name))
		case "network":
			ids = strings.Fields(docker("network", "ls", "-q", "--filter", "label=release.pipeline="+name))
		}
		if len(ids) == 0 {
			t.Errorf("no %s of pipeline %s to inspect", kind, name)
		}
		for _, id := range ids {
			format := "{{json .Config.Labels}} {{json .Args}} {{json .Config.Cmd}} {{json .Name}}"
			switch kind {
			case "image":
				format = "{{json .Config.Labels}} {{json .Config.Env}}"
			case "network":
				format = "{{json .Labels}} {{json .Name}}"
			}
			sc.scan(kind+" inspect of "+id, []byte(docker(kind, "inspect", "--format", format, id)))
		}
	}

	sc.mu.Lock()
	defer sc.mu.Unlock()
	t.Logf("env_from secret: %d hits in %d places, %.1f KB scanned in %d forms",
		len(sc.hits), len(sc.places), float64(sc.bytes)/1e3, len(sc.needles))
	for _, h := range slices.Compact(slices.Sorted(slices.Values(sc.hits))) {
		t.Errorf("secret found: %s", h)
	}
}
