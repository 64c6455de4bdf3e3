package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveTokenPipeline has two prod stages that print the serve token, as
// it is and base64-encoded at each alignment: hidden, which does not name
// it (and also counts it in its supervisor's environment, which it could
// read from /proc), and named, which names it in env_from.
const serveTokenPipeline = `
name: servetoken
environments:
  staging: {}
  prod: {from: staging, approval: required}
stages:
  deploy-staging: {uses: exec, environment: staging, with: {command: ['true']}}
  hidden:
    uses: exec
    environment: prod
    needs: [deploy-staging]
    with:
      command: [sh, -c, &print 'echo "token: ${RELEASE_SERVE_TOKEN-unset}"; for p in "" x xy; do printf %s "$p$RELEASE_SERVE_TOKEN" | base64; done; echo "in the parent: $(tr "\0" "\n" < /proc/$PPID/environ | grep -c ^RELEASE_SERVE_TOKEN=)"']
  named:
    uses: exec
    environment: prod
    needs: [deploy-staging]
    with:
      command: [sh, -c, *print]
      env_from: [RELEASE_SERVE_TOKEN]
`

// TestServeTokenKeptFromStages: release serve, with RELEASE_SERVE_TOKEN
// set, approves a prod gate through its API and runs exec stages that
// print the token. A stage that does not name it in env_from does not see
// it, nor does its supervisor; one that names it sees it, and the run log
// shows *** for it. Neither GET /api/runs/{id}/logs, which needs no token,
// nor release logs holds the token in any form.
func TestServeTokenKeptFromStages(t *testing.T) {
	bin := buildRelease(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), serveTokenPipeline)
	token := canary("ServeCanary")
	env := []string{"RELEASE_USER=tester", "NO_COLOR=1", "RELEASE_SERVE_TOKEN=" + token}
	release := func(args ...string) result {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return resultOf(t, args, cmd.Run(), &stdout, &stderr)
	}
	r := release("run")
	if r.code != wantExitWaiting {
		t.Fatalf("release run: %s; want exit %d at the prod gate", r, wantExitWaiting)
	}
	id := r.id()
	_, url, serveLog := startServe(t, bin, dir, env...)
	api := apiClient{t: t, url: url, token: token}
	code, body := api.do("POST", "/api/runs/"+id+"/approve", token, `{"by": "carol"}`)
	var approved struct{ Resumed bool }
	if err := json.Unmarshal([]byte(body), &approved); code != http.StatusOK || err != nil || !approved.Resumed {
		t.Fatalf("approve through the API: %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for recordOf(t, bin, dir, env, id).Status != "succeeded" {
		if time.Now().After(deadline) {
			t.Fatalf("run %s: %+v 30 s after the approval", id, recordOf(t, bin, dir, env, id))
		}
		time.Sleep(100 * time.Millisecond)
	}

	code, apiLog := api.do("GET", "/api/runs/"+id+"/logs", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /api/runs/%s/logs: %d %s", id, code, apiLog)
	}
	var page struct {
		Lines []struct{ Node, Text string }
	}
	if err := json.Unmarshal([]byte(apiLog), &page); err != nil {
		t.Fatalf("GET /api/runs/%s/logs: %v\n%s", id, err, apiLog)
	}
	byStage := map[string][]string{}
	for _, l := range page.Lines {
		byStage[l.Node] = append(byStage[l.Node], strings.TrimSuffix(l.Text, "\n"))
	}
	if h := byStage["hidden"]; len(h) == 0 || h[0] != "token: unset" || h[len(h)-1] != "in the parent: 0" {
		t.Errorf("stage hidden printed %q; want the token unset, in its environment and its supervisor's", h)
	}
	if n := byStage["named"]; len(n) != 5 || n[0] != "token: ***" || strings.Count(strings.Join(n[1:4], "\n"), "***") != 3 {
		t.Errorf("stage named printed %q; want the token, and each base64 form, as ***", n)
	}
	logs := release("logs", id)
	if logs.code != 0 || !strings.Contains(logs.stdout, "token: ***") {
		t.Errorf("release logs %s: %s", id, logs)
	}
	for place, text := range map[string]string{
		"GET /api/runs/" + id + "/logs": apiLog,
		"release logs":                  logs.stdout + logs.stderr,
		"release serve's output":        serveLog.String(),
	} {
		for _, n := range canaryForms("serve token", token, "") {
			if bytes.Contains([]byte(text), n.text) {
				t.Errorf("%s holds the serve token, %s:\n%s", place, n.form, text)
			}
		}
	}
}
