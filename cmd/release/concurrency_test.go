package main

// The concurrency tests drive the real binary as several actors on one
// store would: CI runners resuming the same killed run, two release serve
// processes given the same approval, four processes starting runs of one
// pipeline. Each test runs on SQLite and on the real PostgreSQL (the
// cluster fixtures/up.sh starts; RELEASE_TEST_POSTGRES overrides it), and
// counts the external effects of the exec stages in files next to the
// pipeline: what ran, not what the record says ran.
//
//	eval "$(bash fixtures/up.sh)"
//	go test -race -count=1 -run 'TestResumeRace|TestApproveRace|TestVersionsConcurrent' ./cmd/release

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline/store"
)

// raceLeaseTTL makes the lease of a killed owner expire within a second,
// so a resume that waits for it is not kept waiting long.
const raceLeaseTTL = "RELEASE_LEASE_TTL=1s"

// raceRun is the documented shape of `release runs show RUN -o json`, as
// far as these tests read it.
type raceRun struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Version string `json:"version"`
	Stages  []struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
		Approval *struct {
			By string `json:"by"`
		} `json:"approval"`
	} `json:"stages"`
}

func (f *flow) raceShow(id string) raceRun {
	f.t.Helper()
	var v raceRun
	f.jsonOf(&v, "runs", "show", id)
	return v
}

// started starts `release ARGS` with the short lease TTL; its output is
// in the buffers once it was waited for.
func (f *flow) raceStart(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	f.t.Helper()
	cmd := f.command(ctx, args...)
	cmd.Env = append(cmd.Env, raceLeaseTTL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	return cmd, &stdout, &stderr
}

// tally counts the lines of a file by their first word; a file that does
// not exist yet counts nothing.
func raceTally(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			n[f[0]]++
		}
	}
	return n
}

// raceGone reports whether pid has exited: no such process, or a zombie
// nobody reaped (the parent it was left by is dead).
func raceGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] == 'Z' || s[i+2] == 'X'
}

// raceFigures are a test's counts, logged once at the end.
type raceFigures struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *raceFigures) add(what string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[what] += n
}

func (f *raceFigures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, k := range sortedKeys(f.n) {
		fmt.Fprintf(&b, "\n  %-44s %d", k, f.n[k])
	}
	return b.String()
}

// raceRounds runs round(t, i) for i = 1..rounds as subtests, up to at once
// at a time. The rounds are not t.Parallel: -parallel (GOMAXPROCS) would
// hold them to two, and they spend most of their time waiting on sleeps
// and leases.
func raceRounds(t *testing.T, rounds, atOnce int, round func(t *testing.T, i int)) {
	t.Helper()
	sem := make(chan struct{}, atOnce)
	var wg sync.WaitGroup
	for i := 1; i <= rounds; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.Run(fmt.Sprintf("round-%02d", i), func(t *testing.T) { round(t, i) })
		}()
	}
	wg.Wait()
}

// raceCreateStore makes the store at dsn (a path or a PostgreSQL DSN) and its
// schema.
func raceCreateStore(t *testing.T, dsn string) {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}

// raceStore is RELEASE_STATE for a fresh store on kind: "" (the pipeline
// directory's own SQLite file) or a new PostgreSQL schema.
func raceStore(t *testing.T, kind string) string {
	t.Helper()
	if kind == "postgres" {
		return flowPostgres(t)
	}
	return ""
}

// resumeRacePipeline has four exec stages, two of them side by side in
// an environment (so the run holds its lock too). Each command writes
// NODE:PID to starts as it begins, and its effect, NODE in effects, as its
// very last act.
const resumeRacePipeline = `
name: resumerace
environments:
  dev: {}
stages:
  one:   {uses: exec, with: {command: [sh, -c, &cmd 'echo "$RELEASE_NODE:$$" >> starts; sleep 0.2; echo "$RELEASE_NODE" >> effects']}}
  two:   {uses: exec, environment: dev, needs: [one], with: {command: [sh, -c, *cmd]}}
  three: {uses: exec, environment: dev, needs: [one], with: {command: [sh, -c, *cmd]}}
  four:  {uses: exec, needs: [two, three], with: {command: [sh, -c, *cmd]}}
`

var resumeRaceNodes = []string{"one", "two", "three", "four"}

// TestResumeRace kills `release run` with SIGKILL while a node runs, then
// starts two `release resume RUN --wait` at the same moment, 50 rounds on
// each store. The round's node and the delay after the node's start
// marker vary, so that the kill comes before a node's effect and, in about
// a third of the rounds, after it.
//
// Per node, from the effects and starts files once every command of the
// killed owner is gone, and from the record then: the resumes add exactly
// one effect to each node the record did not have succeeded at the kill,
// and none to the others. So every node's effect happens once, except a
// node whose effect landed after its last record (the kill came between
// the two), which is redone: an exec command cannot be asked whether it
// already ran. The run and every node end succeeded, and each node's
// attempts are the number of times its command started, or one more for
// an attempt the killed owner recorded but whose command never started.
// One resume exits 0 and the other 1 ("already succeeded"), or both 0;
// both exit 1 only when the run was recorded succeeded before the kill.
// The resume that ran records each attempt the killed owner left running
// as fenced.
func TestResumeRace(t *testing.T) {
	bin := buildRelease(t)
	const rounds = 50
	start := time.Now()
	stores := []string{"sqlite", "postgres"}
	figs := map[string]*raceFigures{}
	for _, kind := range stores {
		figs[kind] = &raceFigures{}
	}
	// The rounds of both stores share the machine: four at a time.
	sem := make(chan struct{}, 4)
	t.Run("stores", func(t *testing.T) {
		for _, kind := range stores {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				if kind == "postgres" {
					raceStore(t, kind) // fail or skip here, not in every round
				}
				from := time.Now()
				raceRounds(t, rounds, 4, func(t *testing.T, i int) {
					sem <- struct{}{}
					defer func() { <-sem }()
					resumeRaceRound(t, bin, kind, i, figs[kind])
				})
				t.Logf("%s: %d rounds in %v:%s", kind, rounds, time.Since(from).Round(time.Millisecond), figs[kind])
			})
		}
	})
	t.Logf("TestResumeRace: %d rounds on each of %v in %v", rounds, stores, time.Since(start).Round(time.Millisecond))
}

func resumeRaceRound(t *testing.T, bin, kind string, round int, figs *raceFigures) {
	f := &flow{t: t, bin: bin, dir: t.TempDir(), name: "resumerace", state: raceStore(t, kind)}
	writeFile(t, filepath.Join(f.dir, "pipeline.yaml"), resumeRacePipeline)
	starts, effects := filepath.Join(f.dir, "starts"), filepath.Join(f.dir, "effects")
	// The node to kill in, and how long after its start marker: before
	// its effect (which comes 200ms after the marker), around it, or after
	// it. A kill after the last node's effect would come after the run's
	// end, so its latest kill is around its effect.
	target := resumeRaceNodes[round%len(resumeRaceNodes)]
	delay := []time.Duration{0, 120 * time.Millisecond, 240 * time.Millisecond}[(round/len(resumeRaceNodes))%3]
	if delay > 200*time.Millisecond && target == resumeRaceNodes[len(resumeRaceNodes)-1] {
		delay = 180 * time.Millisecond
	}
	delay += time.Duration(round*7%30) * time.Millisecond

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run, runOut, runErr := f.raceStart(ctx, "run", "--yes")
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); raceStarts(t, starts)[target] == 0; {
		select {
		case err := <-exited:
			t.Fatalf("release run ended (%v) before node %s started\nstdout:\n%s\nstderr:\n%s", err, target, runOut, runErr)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			run.Process.Kill()
			<-exited
			t.Fatalf("node %s never started\nstdout:\n%s\nstderr:\n%s", target, runOut, runErr)
		}
	}
	time.Sleep(delay)
	_ = run.Process.Signal(syscall.SIGKILL)
	err := <-exited
	ws, _ := run.ProcessState.Sys().(syscall.WaitStatus)
	killed := ws.Signaled() && ws.Signal() == syscall.SIGKILL
	if !killed {
		// The run ended before the kill (its last node, a late kill).
		if err != nil {
			t.Fatalf("release run was not killed and failed: %v\nstderr:\n%s", err, runErr)
		}
		figs.add("rounds whose process ended before the kill", 1)
	}
	id := strings.TrimSpace(strings.SplitN(runOut.String(), "\n", 2)[0])
	if id == "" {
		t.Fatalf("release run printed no run id\nstderr:\n%s", runErr)
	}

	// Each command writes its pid with its start marker. Once all of them
	// are gone, and no new marker came for a while, nothing more reaches
	// the files from the killed owner. A command can still start after
	// the kill: its supervisor was asked to start it just before.
	var first string
	for deadline, settled := time.Now().Add(10*time.Second), ""; ; {
		text := raceRead(t, starts)
		alive := 0
		for _, line := range strings.Fields(text) {
			_, pid, _ := strings.Cut(line, ":")
			if n, err := strconv.Atoi(pid); err == nil && !raceGone(n) {
				alive++
			}
		}
		if alive == 0 && first == "" {
			first = text
		}
		if alive == 0 && text == settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commands of the killed run still run 10s after the kill", alive)
		}
		if alive == 0 {
			settled = text
			time.Sleep(250 * time.Millisecond)
			continue
		}
		time.Sleep(10 * time.Millisecond)
	}
	figs.add("commands that started after release was killed", len(strings.Fields(raceRead(t, starts)))-len(strings.Fields(first)))
	startsAt, effectsAt := raceStarts(t, starts), raceTally(t, effects)
	atKill := map[string]raceNode{}
	shownAtKill := f.raceShow(id)
	for _, n := range shownAtKill.Stages {
		atKill[n.ID] = raceNode{n.Status, n.Attempts}
	}
	// The kill may come after the run was recorded succeeded, while its
	// owner gave back its leases or exited: then there is nothing to resume.
	finished := !killed || shownAtKill.Status == "succeeded"
	if finished {
		figs.add("rounds whose run was recorded succeeded at the kill", 1)
	}

	// Two resumes, started together.
	cmds := make([]*exec.Cmd, 2)
	outs := make([][2]*bytes.Buffer, 2)
	for i := range cmds {
		cmd := f.command(ctx, "resume", id, "--wait")
		cmd.Env = append(cmd.Env, raceLeaseTTL)
		outs[i] = [2]*bytes.Buffer{{}, {}}
		cmd.Stdout, cmd.Stderr = outs[i][0], outs[i][1]
		cmds[i] = cmd
	}
	resumeStart := time.Now()
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	res := make([]result, 2)
	for i, c := range cmds {
		res[i] = resultOf(t, c.Args[1:], c.Wait(), outs[i][0], outs[i][1])
	}
	figs.add("resume pairs' wall time, ms", int(time.Since(resumeStart).Milliseconds()))
	codes := []int{res[0].code, res[1].code}
	slices.Sort(codes)
	figs.add(fmt.Sprintf("resume exits %d and %d", codes[0], codes[1]), 1)
	var ran *result
	switch {
	case slices.Equal(codes, []int{0, 1}):
		ran = &res[0]
		if res[0].code != 0 {
			ran = &res[1]
		}
		lost := res[0]
		if res[0].code == 0 {
			lost = res[1]
		}
		if !strings.Contains(lost.stderr, "already succeeded") {
			t.Errorf("the resume that exited 1 does not say the run already succeeded:\n%s", lost)
		}
	case slices.Equal(codes, []int{0, 0}):
		ran = &res[0]
	case slices.Equal(codes, []int{1, 1}) && finished:
		for _, r := range res {
			if !strings.Contains(r.stderr, "already succeeded") {
				t.Errorf("resume of a finished run:\n%s", r)
			}
		}
	default:
		t.Errorf("resume exits %v (killed: %v, run %s at the kill), want 0 and 1, or 0 and 0 (1 and 1 for a run that had succeeded)\nfirst: %s\nsecond: %s", codes, killed, shownAtKill.Status, res[0], res[1])
	}

	end := f.raceShow(id)
	startsEnd, effectsEnd := raceStarts(t, starts), raceTally(t, effects)
	if end.Status != "succeeded" {
		t.Errorf("run %s is %s after the resumes, want succeeded", id, end.Status)
	}
	if len(end.Stages) != len(resumeRaceNodes) {
		t.Errorf("run %s has %d nodes, want %d", id, len(end.Stages), len(resumeRaceNodes))
	}
	figs.add("rounds", 1)
	figs.add("duplicate effects", 0)
	figs.add("missing effects", 0)
	figs.add("records that disagree with what ran", 0)
	for _, n := range end.Stages {
		at := atKill[n.ID]
		figs.add("effects counted", effectsEnd[n.ID])
		figs.add("command starts counted", startsEnd[n.ID])
		if n.Status != "succeeded" {
			t.Errorf("node %s is %s, want succeeded", n.ID, n.Status)
		}
		if effectsAt[n.ID] > 1 || (at.status == "succeeded" && effectsAt[n.ID] != 1) {
			t.Errorf("at the kill node %s is recorded %s with %d effects", n.ID, at.status, effectsAt[n.ID])
		}
		want := effectsAt[n.ID]
		if at.status != "succeeded" {
			want++
		}
		switch got := effectsEnd[n.ID]; {
		case got > want:
			figs.add("duplicate effects", got-want)
			t.Errorf("node %s: %d effects, want %d (%d at the kill, recorded %s then)", n.ID, got, want, effectsAt[n.ID], at.status)
		case got < want:
			figs.add("missing effects", want-got)
			t.Errorf("node %s: %d effects, want %d (%d at the kill, recorded %s then)", n.ID, got, want, effectsAt[n.ID], at.status)
		case got == 2:
			figs.add("effects redone: the kill came after the effect, before its record", 1)
		}
		// An attempt the killed owner recorded running but whose command
		// had not started by the kill counts once in attempts, and in
		// starts only if the command started after all.
		unstarted := 0
		if at.status == "running" && at.attempts > startsAt[n.ID] {
			unstarted = at.attempts - startsAt[n.ID]
			figs.add("attempts recorded before their command started", unstarted)
		}
		if d := n.Attempts - startsEnd[n.ID]; d < 0 || d > unstarted {
			figs.add("records that disagree with what ran", 1)
			t.Errorf("node %s: %d attempts recorded, its command started %d times (%d attempts recorded without a start at the kill)", n.ID, n.Attempts, startsEnd[n.ID], unstarted)
		}
		if at.status == "running" && ran != nil {
			figs.add("attempts left running by the killed owner", 1)
			if !strings.Contains(ran.stderr, n.ID+" fenced") {
				t.Errorf("node %s was running at the kill; the resume that ran did not record it fenced:\n%s", n.ID, ran.stderr)
			}
		}
	}
	if t.Failed() {
		t.Logf("round %d: kill %v after %s started (killed: %v); at the kill: %v, starts %v, effects %v\nfirst resume: %s\nsecond resume: %s",
			round, delay, target, killed, atKill, startsAt, effectsAt, res[0], res[1])
	}
}

type raceNode struct {
	status   string
	attempts int
}

// raceStarts counts the start markers (NODE:PID) of each node.
func raceStarts(t *testing.T, path string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, line := range strings.Fields(raceRead(t, path)) {
		node, _, _ := strings.Cut(line, ":")
		n[node]++
	}
	return n
}

// raceRead is the file's text, or "" when it does not exist yet.
func raceRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// approveRacePipeline waits at the prod approval gate; deploy-prod, after
// it, marks its start and then its effect with the run id.
const approveRacePipeline = `
name: approverace
environments:
  dev: {}
  prod: {from: dev, approval: required}
stages:
  build: {uses: exec, with: {command: ['true']}}
  deploy-dev: {uses: exec, environment: dev, needs: [build], with: {command: ['true']}}
  deploy-prod:
    uses: exec
    environment: prod
    needs: [deploy-dev]
    with: {command: [sh, -c, 'echo "$RELEASE_RUN_ID" >> starts; sleep 0.1; echo "$RELEASE_RUN_ID" >> effects']}
`

// TestApproveRace sends the same approval to two release serve processes
// on one store at the same moment, 50 rounds on each store, each round a
// new run waiting at the prod gate: exactly one server answers resumed:
// true; the other answers resumed: false saying why, or refuses the
// approval because the gate no longer waits. deploy-prod, the stage after
// the gate, runs exactly once; the record says succeeded, with attempts 1
// and the approval.
func TestApproveRace(t *testing.T) {
	bin := buildRelease(t)
	const rounds = 50
	const token = "approve-race-token"
	start := time.Now()
	stores := []string{"sqlite", "postgres"}
	figs := map[string]*raceFigures{}
	for _, kind := range stores {
		figs[kind] = &raceFigures{}
	}
	t.Run("stores", func(t *testing.T) {
		for _, kind := range stores {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				from := time.Now()
				f := &flow{t: t, bin: bin, dir: t.TempDir(), name: "approverace", state: raceStore(t, kind)}
				writeFile(t, filepath.Join(f.dir, "pipeline.yaml"), approveRacePipeline)
				// The servers are given only what the binary would get from
				// f.env, plus the token and the short lease.
				env := []string{"RELEASE_SERVE_TOKEN=" + token, raceLeaseTTL, "NO_COLOR=1", "RELEASE_STATE=" + f.state}
				if f.state == "" {
					env[len(env)-1] = "RELEASE_STATE=" + filepath.Join(f.dir, ".release", "state.db")
				}
				_, urlA, logA := startServe(t, bin, f.dir, env...)
				_, urlB, logB := startServe(t, bin, f.dir, env...)
				defer func() {
					if t.Failed() {
						t.Logf("server a:\n%s\nserver b:\n%s", logA, logB)
					}
				}()
				// The rounds share the servers, the store and the prod lock:
				// one after the other.
				for i := 1; i <= rounds; i++ {
					t.Run(fmt.Sprintf("round-%02d", i), func(t *testing.T) {
						f := *f
						f.t = t
						approveRaceRound(t, &f, [2]string{urlA, urlB}, token, figs[kind])
					})
				}
				t.Logf("%s: %d rounds in %v:%s", kind, rounds, time.Since(from).Round(time.Millisecond), figs[kind])
			})
		}
	})
	t.Logf("TestApproveRace: %d rounds on each of %v in %v", rounds, stores, time.Since(start).Round(time.Millisecond))
}

// raceAnswer is a server's answer to POST /api/runs/{id}/approve.
type raceAnswer struct {
	code int
	body string
	err  error
	// Resumed and NotResumed are read from a 200's body.
	Resumed    bool   `json:"resumed"`
	NotResumed string `json:"notResumed"`
}

func approveRaceRound(t *testing.T, f *flow, urls [2]string, token string, figs *raceFigures) {
	// --wait: the run of the round before may still be giving back its
	// locks.
	r := f.release("run", "--wait")
	if r.code != 5 {
		t.Fatalf("release run: want it waiting at the gate (exit 5):\n%s", r)
	}
	id := r.id()

	// Both requests leave together.
	go1 := make(chan struct{})
	answers := make([]raceAnswer, 2)
	var wg sync.WaitGroup
	for i, url := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest("POST", url+"/api/runs/"+id+"/approve", strings.NewReader(`{"by": "alice"}`))
			if err != nil {
				answers[i].err = err
				return
			}
			req.Header.Set("Authorization", "Bearer "+token)
			<-go1
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			answers[i].code, answers[i].body, answers[i].err = resp.StatusCode, string(b), err
			if err == nil && resp.StatusCode == http.StatusOK {
				answers[i].err = json.Unmarshal(b, &answers[i])
			}
		}()
	}
	close(go1)
	wg.Wait()

	resumed := 0
	for i, a := range answers {
		switch {
		case a.err != nil:
			t.Fatalf("server %c: %v (%d %s)", 'a'+i, a.err, a.code, a.body)
		case a.code == http.StatusOK && a.Resumed:
			resumed++
			figs.add("answers resumed:true", 1)
		case a.code == http.StatusOK:
			figs.add("answers resumed:false", 1)
			if a.NotResumed == "" {
				t.Errorf("server %c answered resumed: false without notResumed: %s", 'a'+i, a.body)
			}
			figs.add("  notResumed: "+raceWhy(a.NotResumed), 1)
		case a.code == http.StatusConflict:
			figs.add("answers 409 (the gate no longer waits)", 1)
		default:
			t.Errorf("server %c: %d %s", 'a'+i, a.code, a.body)
		}
	}
	figs.add("rounds", 1)
	figs.add("rounds without exactly one resumed:true", 0)
	if resumed != 1 {
		figs.add("rounds without exactly one resumed:true", 1)
		t.Errorf("%d servers answered resumed: true, want 1:\na: %d %s\nb: %d %s", resumed, answers[0].code, answers[0].body, answers[1].code, answers[1].body)
	}

	var end raceRun
	for deadline := time.Now().Add(30 * time.Second); ; {
		end = f.raceShow(id)
		if end.Status == "succeeded" || time.Now().After(deadline) {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	// A second execution would come after the first: let it show.
	time.Sleep(150 * time.Millisecond)
	end = f.raceShow(id)
	effects, starts := raceTally(t, filepath.Join(f.dir, "effects"))[id], raceTally(t, filepath.Join(f.dir, "starts"))[id]
	figs.add("deploy-prod effects counted", effects)
	figs.add("duplicate effects", 0)
	figs.add("records that disagree with what ran", 0)
	if effects != 1 || starts != 1 {
		figs.add("duplicate effects", max(effects-1, 0))
		t.Errorf("deploy-prod of run %s: %d effects, %d starts, want 1 and 1", id, effects, starts)
	}
	if end.Status != "succeeded" {
		t.Errorf("run %s is %s, want succeeded", id, end.Status)
	}
	for _, n := range end.Stages {
		if n.Status != "succeeded" {
			t.Errorf("node %s is %s, want succeeded", n.ID, n.Status)
		}
		if n.ID == "deploy-prod" && n.Attempts != starts {
			figs.add("records that disagree with what ran", 1)
			t.Errorf("deploy-prod: attempts %d recorded, the command started %d times", n.Attempts, starts)
		}
		if n.ID == "approve-prod" && (n.Approval == nil || n.Approval.By != "alice") {
			t.Errorf("approve-prod: approval %+v, want by alice", n.Approval)
		}
	}
}

// raceWhy groups the reasons a server gives for not resuming.
func raceWhy(why string) string {
	switch {
	case strings.Contains(why, "already succeeded"):
		return "already succeeded"
	case strings.Contains(why, "is being executed by"):
		return "claimed by the other server"
	case strings.Contains(why, "locked by"):
		return "an environment is locked"
	case strings.Contains(why, "already executes"):
		return "this server already executes it"
	}
	return why
}

// raceVersionsPipeline has one exec stage that writes the run's id and version.
const raceVersionsPipeline = `
name: %s
version: {bump: minor}
stages:
  build: {uses: exec, with: {command: [sh, -c, 'echo "$RELEASE_RUN_ID $RELEASE_VERSION" >> %s']}}
`

// raceGatedPipeline waits at an approval gate before its exec stage.
const raceGatedPipeline = `
name: %s
version: {bump: minor}
stages:
  gate: {uses: approval}
  ship: {uses: exec, needs: [gate], with: {command: [sh, -c, 'echo "$RELEASE_RUN_ID $RELEASE_VERSION" >> %s']}}
`

// TestVersionsConcurrent starts 100 runs of one pipeline from 4 processes
// at a time (4 workers of 25 `release run --yes` each) on one store: 100
// runs succeed with 100 distinct versions, and the effects file has one
// line per run with its version. A second pipeline in the same store
// starts at its own first version, 0.1.0; a run of it that waits for
// approval holds 0.1.0, the next run takes 0.2.0, and once approved the
// waiting run releases 0.1.0.
func TestVersionsConcurrent(t *testing.T) {
	bin := buildRelease(t)
	const workers, perWorker = 4, 25
	start := time.Now()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			from := time.Now()
			state := raceStore(t, kind)
			shared := t.TempDir()
			if state == "" {
				state = filepath.Join(shared, "state.db")
			}
			effects := filepath.Join(shared, "effects")
			a := &flow{t: t, bin: bin, dir: t.TempDir(), name: "versions", state: state}
			writeFile(t, filepath.Join(a.dir, "pipeline.yaml"), fmt.Sprintf(raceVersionsPipeline, a.name, effects))
			// The store is made before four processes open it at once.
			raceCreateStore(t, state)

			var mu sync.Mutex
			var ids []string
			var wg sync.WaitGroup
			for w := 1; w <= workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t.Run(fmt.Sprintf("worker-%d", w), func(t *testing.T) {
						f := *a
						f.t = t
						for range perWorker {
							r := f.release("run", "--yes")
							if r.code != 0 {
								t.Errorf("release run:\n%s", r)
								continue
							}
							mu.Lock()
							ids = append(ids, r.id())
							mu.Unlock()
						}
					})
				}()
			}
			wg.Wait()
			t.Logf("%d runs from %d processes at a time in %v", len(ids), workers, time.Since(from).Round(time.Millisecond))

			runs := a.runs()
			seen := map[string][]string{} // runs by version
			for _, r := range runs {
				if r.Status != "succeeded" {
					t.Errorf("run %s is %s", r.ID, r.Status)
				}
				seen[r.Version] = append(seen[r.Version], r.ID)
			}
			for v, rs := range seen {
				if len(rs) > 1 {
					t.Errorf("version %s was given to %d runs: %v", v, len(rs), rs)
				}
			}
			lines := strings.Split(strings.TrimSpace(raceRead(t, effects)), "\n")
			byRun := map[string]string{}
			for _, l := range lines {
				id, v, _ := strings.Cut(l, " ")
				if _, dup := byRun[id]; dup {
					t.Errorf("run %s ran its stage twice", id)
				}
				byRun[id] = v
			}
			for _, r := range runs {
				if byRun[r.ID] != r.Version {
					t.Errorf("run %s is recorded with version %s, its stage saw %q", r.ID, r.Version, byRun[r.ID])
				}
			}
			versions := sortedKeys(seen)
			t.Logf("%s: %d runs, %d distinct versions, %d effects, %d exits other than 0 (versions %s … %s)",
				kind, len(runs), len(seen), len(lines), workers*perWorker-len(ids), raceNewest(versions, false), raceNewest(versions, true))
			if len(runs) != workers*perWorker || len(seen) != workers*perWorker || len(byRun) != workers*perWorker {
				t.Errorf("%d runs, %d distinct versions, %d runs' effects; want %d of each", len(runs), len(seen), len(byRun), workers*perWorker)
			}

			// A second pipeline in the same store.
			b := &flow{t: t, bin: bin, dir: t.TempDir(), name: "versions-gated", state: state}
			writeFile(t, filepath.Join(b.dir, "pipeline.yaml"), fmt.Sprintf(raceGatedPipeline, b.name, effects))
			held := b.release("run")
			if held.code != 5 {
				t.Fatalf("the gated run: want it waiting (exit 5):\n%s", held)
			}
			next := b.mustRelease("run", "--yes")
			if got := b.raceShow(held.id()).Version; got != "0.1.0" {
				t.Errorf("the first run of a second pipeline in the store got %s, want 0.1.0", got)
			}
			if got := b.raceShow(next.id()).Version; got != "0.2.0" {
				t.Errorf("the run after one waiting at 0.1.0 got %s, want 0.2.0", got)
			}
			b.mustRelease("approve", held.id())
			b.mustRelease("resume", held.id())
			if v := b.raceShow(held.id()); v.Status != "succeeded" || v.Version != "0.1.0" {
				t.Errorf("the approved run: %s at %s, want succeeded at 0.1.0", v.Status, v.Version)
			}
			// The first pipeline goes on from its own versions.
			if got := a.raceShow(a.mustRelease("run", "--yes").id()).Version; seen[got] != nil {
				t.Errorf("the next run of %s got %s, which an earlier run had", a.name, got)
			}
			lines = strings.Split(strings.TrimSpace(raceRead(t, effects)), "\n")
			if len(lines) != workers*perWorker+3 {
				t.Errorf("%d effects, want %d", len(lines), workers*perWorker+3)
			}
		})
	}
	t.Cleanup(func() { t.Logf("TestVersionsConcurrent: %v", time.Since(start).Round(time.Millisecond)) })
}

// newest is the highest (or lowest) of versions by semantic order.
func raceNewest(versions []string, highest bool) string {
	if len(versions) == 0 {
		return ""
	}
	parse := func(v string) [3]int {
		var p [3]int
		for i, s := range strings.SplitN(v, ".", 3) {
			p[i], _ = strconv.Atoi(s)
		}
		return p
	}
	best := versions[0]
	for _, v := range versions[1:] {
		pv, pb := parse(v), parse(best)
		c := slices.Compare(pv[:], pb[:])
		if (highest && c > 0) || (!highest && c < 0) {
			best = v
		}
	}
	return best
}
