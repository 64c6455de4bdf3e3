package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// startServe starts the real binary's release serve in dir on a free port
// and returns its base URL once it answers.
func startServe(t *testing.T, bin, dir string, env ...string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--inspect", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	errLog := &syncBuffer{}
	cmd.Stderr = errLog
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("release serve stderr:\n%s", errLog)
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- strings.TrimSpace(sc.Text())
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case url := <-line:
		return cmd, strings.TrimSuffix(url, "/"), errLog
	case <-time.After(30 * time.Second):
		t.Fatalf("release serve printed no address\n%s", errLog)
	}
	return nil, "", nil
}

// chromium finds Debian's chromium, installing it with fixtures/chromium.sh
// when missing. Without it the test fails under CI and is skipped outside.
func chromium(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("chromium"); err == nil {
		return bin
	}
	script, _ := filepath.Abs(filepath.Join("..", "..", "fixtures", "chromium.sh"))
	out, err := exec.Command(script).Output()
	if err == nil {
		return strings.TrimSpace(string(out))
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("chromium: %v (fixtures/chromium.sh installs it)", err)
	}
	t.Skipf("no chromium: %v", err)
	return ""
}

var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--no-first-run", "--hide-scrollbars", "--window-size=1400,1100",
}

// dashboardShot is where TestDashboardChromium saves its screenshot;
// RELEASE_DASHBOARD_SCREENSHOT overrides it.
func dashboardShot() string {
	if p := os.Getenv("RELEASE_DASHBOARD_SCREENSHOT"); p != "" {
		return p
	}
	return filepath.Join(os.TempDir(), "release-dashboard.png")
}

// TestDashboardChromium loads the dashboard of a real release serve in
// headless Chromium, with runs and releases in the store: every
// environment with its version and service digests, and the DAG of the
// waiting run with each node coloured by its status, are in the DOM the
// browser built; the page refreshed itself; a screenshot is saved.
func TestDashboardChromium(t *testing.T) {
	browser := chromium(t)
	bin := buildRelease(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	if out, err := runIn(dir, bin, "run", "--force", "--reason", "seeding the dashboard"); !strings.Contains(out, "waiting for approval") {
		t.Fatalf("seed run: %v\n%s", err, out)
	}
	st, err := store.Open(context.Background(), filepath.Join(dir, ".release", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"dev", "staging"} {
		d := &pipeline.Deployment{Environment: env, Version: "1.0.0", RunID: "seed", Kind: "run", Images: map[string]string{"api": apiDigest, "web": strings.Replace(apiDigest, "api", "web", 1)}, At: time.Now()}
		if err := st.RecordDeployment(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	_, url, _ := startServe(t, bin, dir, "RELEASE_SERVE_TOKEN=dashboard-test")
	// The page's script refreshes it every 3s; Chromium's virtual time runs
	// those timers without the test waiting for them.
	dom, err := exec.Command(browser, append(chromiumFlags, "--virtual-time-budget=10000", "--dump-dom", url+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	page := string(dom)
	for _, want := range []string{
		`data-env="dev" data-version="1.0.0"`,
		`data-env="staging" data-version="1.0.0"`,
		`data-env="prod" data-version=""`,
		`data-window="holidays"`,
		`<tr data-service="api">`,
		`<tr data-service="web">`,
		`title="` + apiDigest + `"`,
		`data-node="build" data-status="succeeded"`,
		`data-node="deploy-staging" data-status="succeeded"`,
		`data-node="approve-prod" data-status="waiting"`,
		`data-node="deploy-prod" data-status="pending"`,
		`<g class="node waiting"`,
		`data-from="deploy-staging" data-to="approve-prod"`,
		`compiled shop`, // the logs
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	if m := regexp.MustCompile(`data-refreshes="(\d+)"`).FindStringSubmatch(page); m == nil {
		t.Error("the page never refreshed itself")
	}
	if strings.Contains(page, "dashboard-test") {
		t.Error("the token reached the page")
	}

	shot := dashboardShot()
	os.Remove(shot)
	if out, err := exec.Command(browser, append(chromiumFlags, "--screenshot="+shot, url+"/")...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 10000 || string(b[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %v, %d bytes", shot, err, len(b))
	}
	t.Logf("screenshot: %s", shot)
}

// TestServeSIGTERM stops a real release serve while a promotion it
// started is in a stage: serve exits 0, the run is recorded cancelled, and
// release resume finishes it.
func TestServeSIGTERM(t *testing.T) {
	bin := buildRelease(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), `
name: slow
environments:
  dev: {}
  staging: {from: dev}
stages:
  deploy-dev: {uses: exec, environment: dev, with: {command: ['true']}}
  deploy-staging:
    uses: exec
    environment: staging
    needs: [deploy-dev]
    with: {command: [sh, -c, 'test -e resumed && echo resumed >> effects && exit 0; touch started; sleep 60']}
`)
	st, err := store.Open(context.Background(), filepath.Join(dir, ".release", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	rel := &pipeline.Release{Version: "1.0.0", Pipeline: "slow", RunID: "seed", Commits: map[string]string{}, Images: map[string]string{}, CreatedAt: time.Now()}
	if err := st.RecordRelease(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordDeployment(context.Background(), &pipeline.Deployment{Environment: "dev", Version: "1.0.0", RunID: "seed", Kind: "run", Images: map[string]string{}, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	cmd, url, errLog := startServe(t, bin, dir, "RELEASE_SERVE_TOKEN=sigterm-test")
	req, _ := http.NewRequest("POST", url+"/api/promotions", strings.NewReader(`{"environment": "staging"}`))
	req.Header.Set("Authorization", "Bearer sigterm-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var started struct{ RunID string }
	json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || started.RunID == "" {
		t.Fatalf("promote: %d %+v", resp.StatusCode, started)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the staging stage never started")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("release serve after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("release serve did not stop within 30s of SIGTERM")
	}
	if !strings.Contains(errLog.String(), "stopped") {
		t.Errorf("no shutdown in the log:\n%s", errLog)
	}

	got := runStatus(t, bin, dir, started.RunID)
	if got["run"] != "interrupted" || got["deploy-staging"] != "interrupted" {
		t.Errorf("after SIGTERM: %v; want the run and its in-flight node interrupted", got)
	}
	writeFile(t, filepath.Join(dir, "resumed"), "")
	if out, err := runIn(dir, bin, "resume", started.RunID); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if got := runStatus(t, bin, dir, started.RunID); got["run"] != "succeeded" {
		t.Errorf("after resume: %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "effects")); string(b) != "resumed\n" {
		t.Errorf("effects %q", b)
	}
}

// TestServeTwoProcesses runs two real release serve processes on one
// SQLite store with a schedule that fires every three seconds: every fire
// starts exactly one run, and its stage runs once.
func TestServeTwoProcesses(t *testing.T) {
	bin := buildRelease(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), `
name: twice
stages:
  build: {uses: exec, with: {command: [sh, -c, 'echo ran >> fires']}}
schedules:
  often: {cron: "@every 3s", bump: patch}
`)
	a, _, logA := startServe(t, bin, dir)
	b, _, logB := startServe(t, bin, dir)
	st, err := store.Open(context.Background(), filepath.Join(dir, ".release", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	deadline := time.Now().Add(40 * time.Second)
	for {
		runs, err := st.Runs(context.Background(), pipeline.RunFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d runs after 40s, want 4 fires", len(runs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, cmd := range []*exec.Cmd{a, b} {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range []*exec.Cmd{a, b} {
		if err := cmd.Wait(); err != nil {
			t.Errorf("release serve after SIGTERM: %v", err)
		}
	}

	runs, err := st.Runs(context.Background(), pipeline.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	perFire := map[string]int{}
	succeeded := 0
	for _, r := range runs {
		perFire[r.Params["fire"]]++
		if r.Status == pipeline.Succeeded {
			succeeded++
		}
	}
	for fire, n := range perFire {
		if n != 1 {
			t.Errorf("fire %s started %d runs", fire, n)
		}
	}
	b2, _ := os.ReadFile(filepath.Join(dir, "fires"))
	if got := strings.Count(string(b2), "\n"); got != succeeded {
		t.Errorf("the stage ran %d times for %d succeeded runs", got, succeeded)
	}
	if !strings.Contains(logA.String()+logB.String(), "fire claimed by another server") {
		t.Error("neither server saw the other's claim: they did not compete for the fires")
	}
}
