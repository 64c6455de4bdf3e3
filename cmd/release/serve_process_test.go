package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
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
// when missing (fixtures/up.sh installs it too). Without it the test fails
// under CI and is skipped outside.
func chromium(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("chromium"); err == nil {
		return bin
	}
	out, err := exec.Command(filepath.Join(parts.Root(), "fixtures", "chromium.sh")).Output()
	if err == nil {
		return strings.TrimSpace(string(out))
	}
	parts.Missing(t, "chromium", err)
	return ""
}

var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--no-first-run", "--hide-scrollbars", "--window-size=1400,1000",
}

// dashboardShot is where TestDashboardChromium saves its screenshot of the
// page's top, and beside it (NAME-run.png) one of the selected run;
// RELEASE_DASHBOARD_SCREENSHOT overrides it (the README's pictures are
// cmd/release/dashboard/dashboard.png and dashboard-run.png).
func dashboardShot() string {
	if p := os.Getenv("RELEASE_DASHBOARD_SCREENSHOT"); p != "" {
		return p
	}
	return filepath.Join(os.TempDir(), "release-dashboard.png")
}

// TestDashboardChromium loads the dashboard of a real release serve in
// headless Chromium, driven over the DevTools protocol, with a run waiting
// at the prod gate and 30 runs after it: the waiting run is on top of the
// page with an Approve button though the runs list no longer shows it;
// every environment shows its version, digests and history, staging the
// refs and commits of the branch deployment it runs, and the instance
// dev-login of dev-* (in GET /api/environments too) its template, listen
// address, refs and commits; the DAG has
// each node coloured by its status; the page refreshes itself. Then, as a
// person would: the token is entered once and kept for the tab, Approve
// is clicked, the page says the run goes on, and the run finishes. A
// screenshot is saved before the click.
func TestDashboardChromium(t *testing.T) {
	browser := chromium(t)
	bin := buildRelease(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), branchPipeline)
	out, err := runIn(dir, bin, "run", "--force", "--reason", "seeding the dashboard")
	if !strings.Contains(out, "waiting for approval") {
		t.Fatalf("seed run: %v\n%s", err, out)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, ".release", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	runs, err := st.Runs(ctx, pipeline.RunFilter{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("seeded runs %v, %v; want the one waiting", runs, err)
	}
	w := runs[0]
	waiting := w.ID
	newer := seedRuns(t, st, w.StartedAt, 30)
	images := map[string]string{"api": apiDigest, "web": strings.Replace(apiDigest, "api", "web", 1)}
	for i, d := range []pipeline.Deployment{
		{Environment: "dev", Version: "0.9.0", RunID: newer[0]},
		{Environment: "staging", Version: "0.9.0", RunID: newer[1]},
		{Environment: "dev", Version: "1.0.0", RunID: newer[3], Kind: "run"},
		{Environment: "staging", Version: "1.0.0", RunID: newer[4]},
	} {
		d.Kind, d.Images, d.At = cmp.Or(d.Kind, "promote"), images, time.Now().Add(time.Duration(i-10)*time.Minute)
		if err := st.RecordDeployment(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	seedBranches(t, st, newer[5])
	st.Close()

	const token = "dashboard-test-token"
	_, url, _ := startServe(t, bin, dir, "RELEASE_SERVE_TOKEN="+token)
	api := apiClient{t: t, url: url}
	if code, body := api.do("GET", "/api/environments", "", ""); code != http.StatusOK {
		t.Errorf("GET /api/environments: %d %s", code, body)
	} else {
		checkBranchEnvs(t, body)
	}
	page := startDevtools(t, browser, chromiumFlags...).newTab(t, 1400, 1250)

	// The newest runs fill the runs list; the waiting run is on top anyway.
	page.open(url + "/")
	var top struct {
		First   string
		Gates   int
		Listed  bool
		Approve string
		Order   bool
	}
	page.eval(`(function(){
		var w = document.querySelector("#waiting"), g = w.querySelectorAll(".gate");
		return {
			First: g.length ? g[0].getAttribute("data-run") : "",
			Gates: g.length,
			Listed: !!document.querySelector('#runs tr[data-run="`+waiting+`"]'),
			Approve: g.length ? g[0].querySelector("button[data-approve]").textContent : "",
			Order: !!(w.compareDocumentPosition(document.querySelector("#environments")) & Node.DOCUMENT_POSITION_FOLLOWING),
		};
	})()`, &top)
	if top.First != waiting || top.Gates != 1 || top.Approve != "Approve" || !top.Order {
		t.Errorf("waiting panel: %+v; want run %s alone in it, with an Approve button, above the environments", top, waiting)
	}
	if top.Listed {
		t.Error("the waiting run is in the first page of runs: the test needs more runs after it")
	}

	// What the browser built, for the waiting run.
	page.open(url + "/?run=" + waiting)
	var dom string
	page.eval(`document.documentElement.outerHTML`, &dom)
	for _, want := range []string{
		`data-env="dev" data-version="1.0.0"`,
		`data-env="prod" data-version=""`,
		`data-window="holidays"`,
		`<tr data-service="api">`,
		`<tr data-service="web">`,
		`title="` + apiDigest + `"`,
		`<tr data-deployment="0.9.0">`,
		`data-node="build" data-status="succeeded"`,
		`data-node="deploy-staging" data-status="succeeded"`,
		`data-node="approve-prod" data-status="waiting"`,
		`data-node="deploy-prod" data-status="pending"`,
		`<g class="node waiting"`,
		`data-from="deploy-staging" data-to="approve-prod"`,
		`compiled shop`, // the logs
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	checkBranchPage(t, dom)
	page.waitFor("the page refreshing itself", `document.getElementById("updated").getAttribute("data-refreshes") >= 1`, 20*time.Second)

	// The token, entered once.
	page.eval(`(function(){
		document.getElementById("token").value = `+jsString(token)+`;
		document.getElementById("by").value = "carol";
		document.getElementById("tokenform").requestSubmit();
	})()`, nil)
	if got := page.text("#tokenkept"); !strings.Contains(got, "token kept for this tab (approving as carol)") {
		t.Errorf("after entering the token: %q", got)
	}
	page.eval(`document.documentElement.outerHTML`, &dom)
	if strings.Contains(dom, token) {
		t.Error("the token is in the page")
	}
	shot := dashboardShot()
	runShot := strings.TrimSuffix(shot, ".png") + "-run.png"
	if err := os.WriteFile(shot, page.screenshot(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(runShot, page.screenshotOf("#run"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s, %s", shot, runShot)

	// Approve, from the page.
	page.eval(`document.querySelector('#waiting button[data-approve="`+waiting+`"]').click()`, nil)
	page.waitFor("an answer to the approval", `/goes on|not/.test(document.getElementById("answer").textContent)`, 30*time.Second)
	if got := page.text("#answer"); got != "approved approve-prod of run "+waiting+" as carol; the run goes on" {
		t.Errorf("the page's answer: %q", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v serveRunView
		api.getJSON("/api/runs/"+waiting, &v)
		if v.Status == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %s 30 s after the approval: %+v", waiting, v.Status, v.Stages)
		}
		time.Sleep(100 * time.Millisecond)
	}
	page.waitFor("the page showing the run done", `document.querySelector('#dag [data-node="deploy-prod"]').getAttribute("data-status") === "succeeded" && !document.querySelector("#waiting .gate")`, 20*time.Second)

	// The token is kept for the tab: a reload still has it.
	page.open(url + "/")
	if got := page.text("#tokenkept"); !strings.Contains(got, "token kept for this tab") {
		t.Errorf("after a reload: %q, want the token still kept", got)
	}
	if got := page.text("#waiting"); !strings.Contains(got, "nothing waits for an approval") {
		t.Errorf("waiting panel after the approval: %q", got)
	}
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
  build: {uses: exec, with: {command: [sh, -c, 'echo "$RELEASE_RUN_ID" >> fires']}}
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
	for _, r := range runs {
		perFire[r.Params["fire"]]++
	}
	for fire, n := range perFire {
		if n != 1 {
			t.Errorf("fire %s started %d runs", fire, n)
		}
	}
	// Each run's stage ran once: a succeeded run's exactly once, and a run
	// the SIGTERM interrupted at most once (its command may have run before
	// the run was recorded interrupted).
	b2, _ := os.ReadFile(filepath.Join(dir, "fires"))
	ran := map[string]int{}
	for _, id := range strings.Fields(string(b2)) {
		ran[id]++
	}
	for _, r := range runs {
		if n := ran[r.ID]; n > 1 || (r.Status == pipeline.Succeeded && n != 1) {
			t.Errorf("run %s (%s): its stage ran %d times", r.ID, r.Status, n)
		}
		delete(ran, r.ID)
	}
	if len(ran) > 0 {
		t.Errorf("the stage ran for runs the store does not have: %v", ran)
	}
	if !strings.Contains(logA.String()+logB.String(), "fire claimed by another server") {
		t.Error("neither server saw the other's claim: they did not compete for the fires")
	}
}
