package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A state store that stops answering, as a team's CI meets it: the real
// binary against the real PostgreSQL, through a proxy (blackHole, from the
// lease-loss tests) that can stop forwarding in both directions without
// closing anything.

// storeDownPipeline appends each stage's effect to a file once it is done;
// slow announces itself, then takes far longer than the test waits.
const storeDownPipeline = `
name: storedown
environments:
  staging: {}
stages:
  one:
    uses: exec
    with: {command: [sh, -c, 'echo one >> effects']}
  slow:
    uses: exec
    environment: staging
    needs: [one]
    with: {command: [sh, -c, 'if [ -e resumed ]; then grep -qx slow effects || echo slow >> effects; exit 0; fi; touch started; sleep 60; echo slow >> effects']}
  three:
    uses: exec
    needs: [slow]
    with: {command: [sh, -c, 'echo three >> effects']}
`

// signalBound is the bound from SIGTERM to exit, with a little
// slack for a loaded machine.
const signalBound = 5*time.Second + 500*time.Millisecond

// TestStoreBlackHoledThenSIGTERM black-holes the store's traffic while a
// node runs, then sends SIGTERM: release exits 130 within 5 s, naming on
// stderr what it could not record and the resume command. Once the store
// is back, a resume on the same host takes over the dead owner's leases
// and completes the run, each effect once.
func TestStoreBlackHoledThenSIGTERM(t *testing.T) {
	bin := buildRelease(t)
	dsn := postgresSchema(t)
	_, upstream := viaProxy(t, dsn, "")
	proxy := newBlackHole(t, upstream)
	proxied, _ := viaProxy(t, dsn, proxy.addr())
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), storeDownPipeline)
	env := append(os.Environ(), "RELEASE_STATE="+proxied, "NO_COLOR=1", "RELEASE_USER=tester")

	cmd := exec.Command(bin, "run")
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow never started:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy.cut()
	// Let the owner's store calls run into the cut: its cancel poll (every
	// second) and its lease renewal now hang.
	time.Sleep(1500 * time.Millisecond)
	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-exited
		proxy.heal()
		t.Fatalf("release did not exit 30 s after SIGTERM with the store black-holed:\n%s", stderr.String())
	}
	took := time.Since(signalled)
	r := resultOf(t, cmd.Args, err, &stdout, &stderr)
	t.Logf("SIGTERM with the store black-holed: exit %d after %s\n%s", r.code, took.Round(time.Millisecond), r.stderr)
	if r.code != wantExitSignal {
		t.Errorf("exit %d after SIGTERM, want %d:\n%s", r.code, wantExitSignal, r)
	}
	if took > signalBound {
		t.Errorf("release exited %s after SIGTERM, want within 5 s", took.Round(time.Millisecond))
	}
	id := r.id()
	for _, want := range []string{
		"not recorded: node slow interrupted",
		"the run stays 'running' in the record until its lease lapses",
		"resume with: release resume " + id,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}

	proxy.heal()
	if err := os.WriteFile(filepath.Join(dir, "resumed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	resume := exec.Command(bin, "resume", id)
	resume.Dir, resume.Env = dir, env
	var rout, rerr bytes.Buffer
	resume.Stdout, resume.Stderr = &rout, &rerr
	rr := resultOf(t, resume.Args, resume.Run(), &rout, &rerr)
	if rr.code != wantExitOK {
		t.Fatalf("resume after the store came back: %s", rr)
	}
	if diff := cmp.Diff([]string{"one", "slow", "three"}, readLines(t, filepath.Join(dir, "effects"))); diff != "" {
		t.Errorf("effects (-want +got):\n%s", diff)
	}
	got := recordOf(t, bin, dir, []string{"RELEASE_STATE=" + dsn}, id)
	if got.Status != "succeeded" {
		t.Errorf("run %s is %s after the resume, want succeeded", id, got.Status)
	}
}

// TestStoreUnreachableAtStart starts `release run` against a store that
// refuses connections and one that accepts them and never answers: each
// fails within the store's budget (three connect bounds: the file sets
// connect: 2s) with exit 1 and an error that names the store, never its
// password.
func TestStoreUnreachableAtStart(t *testing.T) {
	bin := buildRelease(t)
	const password = "Pw-unreachable-77"
	const connect = 2 * time.Second
	budget := 3 * connect
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), "timeouts: {connect: 2s}\n"+storeDownPipeline)

	refused := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	blackHoled := func(t *testing.T) string {
		p := newBlackHole(t, "127.0.0.1:9") // nothing is ever forwarded
		p.cut()
		return p.addr()
	}
	for _, c := range []struct {
		name string
		addr func(*testing.T) string
		says string
	}{
		{"refused", refused, "connection refused"},
		{"black-holed", blackHoled, "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := c.addr(t)
			cmd := exec.Command(bin, "run")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "RELEASE_STATE=postgres://release:"+password+"@"+addr+"/release_test?sslmode=disable", "NO_COLOR=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			r := resultOf(t, cmd.Args, cmd.Run(), &stdout, &stderr)
			took := time.Since(start)
			t.Logf("%s store at start: exit %d after %s\n%s", c.name, r.code, took.Round(time.Millisecond), r.stderr)
			if r.code != 1 {
				t.Errorf("exit %d, want 1:\n%s", r.code, r)
			}
			if want := "release: open state store postgres://release:***@" + addr + "/release_test?sslmode=disable: "; !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, c.says) {
				t.Errorf("stderr does not name the store as %q and say %q:\n%s", want, c.says, r.stderr)
			}
			if strings.Contains(r.stdout+r.stderr, password) || strings.Contains(r.stdout+r.stderr, "unreachable-77") {
				t.Errorf("the password shows:\n%s", r)
			}
			if took > budget+2*time.Second {
				t.Errorf("release failed after %s, want within the store's budget of %s", took.Round(time.Millisecond), budget)
			}
			if _, err := os.Stat(filepath.Join(dir, "effects")); err == nil {
				t.Errorf("a stage ran with the store unreachable")
			}
		})
	}
}

// TestStoreRefusedMidRun shuts the store's door while a node runs: the
// proxy closes every connection and refuses new ones. When the node ends,
// its status cannot be recorded; release gives up after its retries and
// exits naming the store (no password) and the resume command, and the
// resume completes the run.
func TestStoreRefusedMidRun(t *testing.T) {
	bin := buildRelease(t)
	dsn := postgresSchema(t)
	_, upstream := viaProxy(t, dsn, "")
	proxy := newBlackHole(t, upstream)
	proxied, _ := viaProxy(t, dsn, proxy.addr())
	dir := t.TempDir()
	// slow's effect is made once it is done, and the store cannot record
	// that: the resume runs it again, and it finds its effect made (as an
	// exec stage's command must when it can be run twice).
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), strings.Replace(storeDownPipeline,
		"sleep 60; echo slow >> effects", "sleep 2; grep -qx slow effects || echo slow >> effects", 1))

	cmd := exec.Command(bin, "run")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "RELEASE_STATE="+proxied, "NO_COLOR=1", "RELEASE_USER=tester")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow never started:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy.close()
	start := time.Now()
	r := resultOf(t, cmd.Args, cmd.Wait(), &stdout, &stderr)
	t.Logf("store refused mid-run: exit %d %s later\n%s", r.code, time.Since(start).Round(time.Millisecond), r.stderr)
	id := r.id()
	if r.code != 1 && r.code != wantExitFenced {
		t.Errorf("exit %d, want 1 (a write the store refused) or %d (the leases lapsed first):\n%s", r.code, wantExitFenced, r)
	}
	if !strings.Contains(r.stderr, "resume with: release resume "+id) {
		t.Errorf("stderr does not give the resume command:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "state store ") && !strings.Contains(r.stderr, "state store postgres://release:***@") {
		t.Errorf("stderr names the store otherwise than without its password:\n%s", r.stderr)
	}

	resume := exec.Command(bin, "resume", id)
	resume.Dir, resume.Env = dir, append(os.Environ(), "RELEASE_STATE="+dsn, "NO_COLOR=1")
	var rout, rerr bytes.Buffer
	resume.Stdout, resume.Stderr = &rout, &rerr
	if rr := resultOf(t, resume.Args, resume.Run(), &rout, &rerr); rr.code != wantExitOK {
		t.Fatalf("resume with the store back: %s", rr)
	}
	if diff := cmp.Diff([]string{"one", "slow", "three"}, readLines(t, filepath.Join(dir, "effects"))); diff != "" {
		t.Errorf("effects (-want +got):\n%s", diff)
	}
}
