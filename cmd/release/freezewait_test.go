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

// freezeWaitPipeline has a prod environment behind an approval gate and a
// freeze window of prod whose dates the test fills in.
const freezeWaitPipeline = `
name: frozenwait
environments:
  staging: {}
  prod: {from: staging, approval: required}
stages:
  deploy-staging: {uses: exec, environment: staging, with: {command: [sh, -c, 'echo "$RELEASE_RUN_ID" >> staging-effects']}}
  deploy-prod: {uses: exec, environment: prod, needs: [deploy-staging], with: {command: [sh, -c, 'echo "$RELEASE_RUN_ID" >> prod-effects']}}
freeze:
  change-freeze: {environments: [prod], from: "FROM", to: "TO"}
`

// TestFreezeWhileWaitingForApproval: a freeze of prod begins while two
// runs wait at the prod gate. Approved and resumed, from the command line
// or through release serve's API, each run leaves prod untouched and
// waits (exit 5) with the reason recorded; forced with a reason, it goes
// through and the override is recorded with who, why, when and the window.
//
// Freeze windows have minute resolution, so the test waits for the next
// minute boundary (up to a minute) and starts the runs 5 s before it.
func TestFreezeWhileWaitingForApproval(t *testing.T) {
	bin := buildRelease(t)
	dir := t.TempDir()
	from := time.Now().UTC().Add(10 * time.Second).Truncate(time.Minute).Add(time.Minute)
	const layout = "2006-01-02 15:04"
	src := strings.NewReplacer("FROM", from.Format(layout), "TO", from.Add(30*time.Minute).Format(layout)).Replace(freezeWaitPipeline)
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), src)
	env := []string{"RELEASE_USER=tester", "NO_COLOR=1"}
	release := func(args ...string) result {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return resultOf(t, args, cmd.Run(), &stdout, &stderr)
	}
	const token = "freeze-test-token"
	_, url, serveLog := startServe(t, bin, dir, "RELEASE_SERVE_TOKEN="+token, "NO_COLOR=1")
	api := apiClient{t: t, url: url, token: token}

	time.Sleep(time.Until(from.Add(-5 * time.Second)))
	var ids []string
	for range 2 {
		r := release("run")
		if r.code != wantExitWaiting || !strings.Contains(r.stderr, "release approve") {
			t.Fatalf("release run: %s; want exit %d at the prod gate", r, wantExitWaiting)
		}
		ids = append(ids, r.id())
	}
	if time.Now().After(from) {
		t.Fatalf("the runs reached the gate only after the freeze began at %s", from.Format(time.TimeOnly))
	}
	cli, viaAPI := ids[0], ids[1]
	gateAttempts := map[string]int{}
	for _, id := range ids {
		_, gateAttempts[id], _ = recordOf(t, bin, dir, env, id).node("approve-prod")
	}
	time.Sleep(time.Until(from.Add(time.Second)))

	// checkFrozen: prod's nodes are as the gate left them, its effect never
	// ran, the run waits, and the record says why.
	checkFrozen := func(id string) {
		t.Helper()
		r := recordOf(t, bin, dir, env, id)
		gate, gateN, gateErr := r.node("approve-prod")
		deploy, deployN, _ := r.node("deploy-prod")
		if r.Status != "waiting" || gate != "waiting" || gateN != gateAttempts[id] || deploy != "pending" || deployN != 0 {
			t.Errorf("run %s: %s; approve-prod %s after %d attempts (%d before), deploy-prod %s after %d; want waiting, waiting, %d, pending, 0",
				id, r.Status, gate, gateN, gateAttempts[id], deploy, deployN, gateAttempts[id])
		}
		if !strings.HasPrefix(gateErr, "frozen: prod is frozen by window change-freeze until ") {
			t.Errorf("run %s: approve-prod's error %q, want the freeze as the reason", id, gateErr)
		}
		if r.Override != nil {
			t.Errorf("run %s: override %+v recorded without --force", id, r.Override)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "prod-effects")); strings.Contains(string(b), id) {
			t.Errorf("run %s: prod's effect ran in the freeze: %q", id, b)
		}
	}
	// checkForced: the run went through, prod's effect ran once, and the
	// override is recorded.
	checkForced := func(id, by, reason string, before, after time.Time) {
		t.Helper()
		r := recordOf(t, bin, dir, env, id)
		if r.Status != "succeeded" {
			t.Errorf("run %s: %s after the override, want succeeded: %+v", id, r.Status, r.Stages)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "prod-effects"))
		if n := strings.Count(string(b), id); n != 1 {
			t.Errorf("run %s: prod's effect ran %d times, want once", id, n)
		}
		o := r.Override
		if o == nil || o.Windows != "change-freeze" || o.By != by || o.Reason != reason || o.At.Before(before.Truncate(time.Second)) || o.At.After(after) {
			t.Errorf("run %s: override %+v; want windows change-freeze, by %s, reason %q, at between %s and %s",
				id, o, by, reason, before.Format(time.TimeOnly), after.Format(time.TimeOnly))
		} else {
			t.Logf("run %s: override %+v", id, *o)
		}
	}

	t.Run("cli", func(t *testing.T) {
		if r := release("approve", cli); r.code != 0 {
			t.Fatalf("approve: %s", r)
		}
		r := release("resume", cli)
		if r.code != wantExitWaiting || !strings.Contains(r.stderr, "frozen") {
			t.Errorf("resume in the freeze: %s; want exit %d naming the freeze", r, wantExitWaiting)
		}
		t.Logf("resume in the freeze: exit %d\n%s", r.code, r.stderr)
		checkFrozen(cli)

		reason := "hotfix for the login outage"
		before := time.Now()
		if r := release("resume", cli, "--force", "--reason", reason); r.code != 0 {
			t.Fatalf("resume --force: %s", r)
		}
		checkForced(cli, "tester", reason, before, time.Now())
	})

	t.Run("api", func(t *testing.T) {
		// waitFor waits until the run's record is as ok wants it.
		waitFor := func(what string, ok func(shownRun) bool) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				r := recordOf(t, bin, dir, env, viaAPI)
				if ok(r) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("run %s: %s, not %s after 20 s\nserver log:\n%s", viaAPI, r.Status, what, serveLog)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		code, body := api.do("POST", "/api/runs/"+viaAPI+"/approve", token, `{"by": "carol"}`)
		if code != http.StatusOK {
			t.Fatalf("approve through the API: %d %s", code, body)
		}
		t.Logf("approve in the freeze: %s", body)
		waitFor("waiting with the freeze as the reason", func(r shownRun) bool {
			_, _, e := r.node("approve-prod")
			return r.Status == "waiting" && strings.HasPrefix(e, "frozen:")
		})
		checkFrozen(viaAPI)

		reason := "security fix CVE-2026-0001"
		before := time.Now()
		req, _ := json.Marshal(map[string]any{"by": "carol", "force": true, "reason": reason})
		// The server's first resume may still be letting go of the run: a
		// client asks again when told so.
		for try := 0; ; try++ {
			code, body = api.do("POST", "/api/runs/"+viaAPI+"/approve", token, string(req))
			if code != http.StatusOK {
				t.Fatalf("forced approve through the API: %d %s", code, body)
			}
			var resp struct {
				Resumed    bool   `json:"resumed"`
				NotResumed string `json:"notResumed"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatalf("forced approve: %v: %s", err, body)
			}
			if resp.Resumed {
				break
			}
			if try == 20 || !(strings.Contains(resp.NotResumed, "already executes") || strings.Contains(resp.NotResumed, "being executed by")) {
				t.Fatalf("forced approve did not resume the run: %s", body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("forced approve: %s", body)
		waitFor("succeeded", func(r shownRun) bool { return r.Status == "succeeded" })
		checkForced(viaAPI, "carol", reason, before, time.Now())
	})
}
