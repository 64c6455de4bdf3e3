package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Lease loss, tried as a team meets it: the owner of a run stops renewing
// its leases while its exec stage acts in staging (its process is
// SIGSTOPped, or its store traffic is black-holed), and a second actor
// that needs staging takes over once the leases expired. The old owner's
// effect must be over before the new one's begins: 0 ms of overlap.
//
// Both actors run the same command, which records its effect window in a
// shared file: a "start" line, a "tick" line every 100 ms while it acts,
// and an "end" line, each with the time in nanoseconds and a tag
// RUN/ACTOR/PID. The old owner's command acts for 4 s, longer than its
// lease (RELEASE_LEASE_TTL=2s) can last: a shorter one would end before
// the lease expires whatever the engine does, and prove nothing. The new
// owner's acts for 1.5 s.
//
// With LEASELOSS_PRINT non-empty the command prints each line too, so that its
// run log is written while it acts (the store-cut test). The SIGSTOP test
// leaves it quiet, or most stops would come while the owner writes its
// log and holds the SQLite store's lock (see sigstopTrial).

// leaseTTL is the lease TTL of every actor in these tests.
const leaseTTL = 2 * time.Second

// The ticks of 100 ms the two actors' commands act for.
const (
	oldOwnerTicks = 40
	newOwnerTicks = 15
)

// Exit codes of the documented table the tests expect (release --help).
const (
	wantExitOK      = 0
	wantExitWaiting = 5
	wantExitFenced  = 7
	wantExitSignal  = 130
)

const leaseLossPipeline = `
name: leaseloss
environments:
  staging: {}
stages:
  effect:
    uses: exec
    environment: staging
    with:
      env_from: [LEASELOSS_ACTOR, LEASELOSS_EFFECTS, LEASELOSS_TICKS, LEASELOSS_PRINT]
      command:
        - sh
        - -c
        - |
          tag="$RELEASE_RUN_ID/$LEASELOSS_ACTOR/$$"
          line() { echo "$1 $(date +%s%N) $tag" >> "$LEASELOSS_EFFECTS"; [ -z "$LEASELOSS_PRINT" ] || echo "$1"; }
          line start
          i=0
          while [ "$i" -lt "$LEASELOSS_TICKS" ]; do sleep 0.1; line tick; i=$((i+1)); done
          line end
`

// leaseLossTrials is how many trials each lease-loss test makes:
// RELEASE_LEASELOSS_TRIALS, 20 by default, 2 with -short.
func leaseLossTrials(t *testing.T) int {
	t.Helper()
	if v := os.Getenv("RELEASE_LEASELOSS_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("RELEASE_LEASELOSS_TRIALS=%q: want a count", v)
		}
		return n
	}
	if testing.Short() {
		return 2
	}
	return 20
}

// effectLine is one line a command wrote to the effects file.
type effectLine struct {
	kind  string // start, tick, end
	at    time.Time
	run   string
	actor string
	pid   int
}

// effectWindow is what one actor's command did: its first and last line.
type effectWindow struct {
	run         string
	pid         int
	first, last time.Time
	ended       bool
	lines       int
}

func readEffects(t *testing.T, path string) []effectLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []effectLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue // a line being written
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		tag := strings.Split(f[2], "/")
		if err != nil || len(tag) != 3 {
			t.Fatalf("effects: bad line %q", sc.Text())
		}
		pid, _ := strconv.Atoi(tag[2])
		out = append(out, effectLine{kind: f[0], at: time.Unix(0, ns), run: tag[0], actor: tag[1], pid: pid})
	}
	return out
}

// windows are the effect windows by actor.
func windows(lines []effectLine) map[string]*effectWindow {
	ws := map[string]*effectWindow{}
	for _, l := range lines {
		w := ws[l.actor]
		if w == nil {
			w = &effectWindow{run: l.run, pid: l.pid, first: l.at}
			ws[l.actor] = w
		}
		w.lines++
		if l.at.After(w.last) {
			w.last = l.at
		}
		if l.kind == "end" {
			w.ended = true
		}
	}
	return ws
}

// waitEffect waits until the command of actor a has written its start
// line; it fails the test when a exits first.
func waitEffect(t *testing.T, path string, a *actor, within time.Duration) effectLine {
	t.Helper()
	l, ok := waitStart(t, path, a, within)
	if !ok {
		t.Fatalf("%s's effect never started: it ended first: %s", a.name, a.result(t))
	}
	return l
}

// waitStart is waitEffect that reports, rather than fails, an actor that
// exited before its effect started.
func waitStart(t *testing.T, path string, a *actor, within time.Duration) (effectLine, bool) {
	t.Helper()
	return waitStartUnless(t, path, a, within, func() bool { return false })
}

// waitStartUnless is waitStart that also gives up, without failing the
// test, as soon as stop says so.
func waitStartUnless(t *testing.T, path string, a *actor, within time.Duration, stop func() bool) (effectLine, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, l := range readEffects(t, path) {
			if l.actor == a.name && l.kind == "start" {
				return l, true
			}
		}
		if a.exited() || stop() {
			return effectLine{}, false
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's effect did not start within %s; its stderr so far:\n%s", a.name, within, a.stderrText())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sqliteHeld says, from what a process printed, that it waits for (or gave
// up on) a lock of the SQLite store that another process holds.
func sqliteHeld(stderr string) bool {
	return strings.Contains(stderr, "database is locked") || strings.Contains(stderr, "locking protocol") ||
		strings.Contains(stderr, "state store slow: waiting") && strings.Contains(stderr, "state.db")
}

// actor is one `release` process of a trial.
type actor struct {
	name           string
	args           []string
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	mu             sync.Mutex // guards stderr while the process runs
	done           chan struct{}
	err            error
	exitAt         time.Time
}

// startActor starts `release ARGS` in dir as actor name, its command
// acting for ticks of 100 ms; env is added to the environment.
func startActor(t *testing.T, bin, dir, name, effects string, ticks int, env []string, args ...string) *actor {
	t.Helper()
	a := &actor{name: name, args: args, done: make(chan struct{})}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Dir = dir
	a.cmd.Env = append(os.Environ(),
		"RELEASE_LEASE_TTL="+leaseTTL.String(), "RELEASE_USER=tester", "NO_COLOR=1",
		"LEASELOSS_ACTOR="+name, "LEASELOSS_EFFECTS="+effects, "LEASELOSS_TICKS="+strconv.Itoa(ticks), "LEASELOSS_PRINT=")
	a.cmd.Env = append(a.cmd.Env, env...)
	a.cmd.Stdout, a.cmd.Stderr = &a.stdout, lockedWriter{&a.mu, &a.stderr}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		a.exitAt = time.Now()
		close(a.done)
	}()
	t.Cleanup(func() {
		if !a.exited() {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	})
	return a
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stderrText is what the actor printed on stderr so far.
func (a *actor) stderrText() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.String()
}

func (a *actor) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func (a *actor) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", a.name, sig, err)
	}
}

// waitFor waits up to within for the actor to exit, and reports whether
// it did.
func (a *actor) waitFor(within time.Duration) bool {
	select {
	case <-a.done:
		return true
	case <-time.After(within):
		return false
	}
}

// hung fails the test for an actor that did not exit within d, with what
// it printed and where its goroutines were (SIGQUIT).
func (a *actor) hung(t *testing.T, trial int, d time.Duration) {
	t.Helper()
	a.signal(t, syscall.SIGQUIT)
	if !a.waitFor(5 * time.Second) {
		a.signal(t, syscall.SIGKILL)
	}
	t.Fatalf("trial %d: %s did not finish within %s: %s", trial, a.name, d, a.result(t))
}

// result is what the exited actor printed, and its exit code.
func (a *actor) result(t *testing.T) result {
	t.Helper()
	<-a.done
	return resultOf(t, append([]string{a.name + ":"}, a.args...), a.err, &a.stdout, &a.stderr)
}

// gone waits until none of pids lives any more, and reports how long
// that took; it gives up after within.
func gone(within time.Duration, pids ...int) (time.Duration, bool) {
	start := time.Now()
	for {
		alive := false
		for _, pid := range pids {
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				alive = true
			}
		}
		if !alive {
			return time.Since(start), true
		}
		if time.Since(start) > within {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lossFigures are the measurements of one trial.
type lossFigures struct {
	trial int
	// overlap is how long the old owner's command still acted after the
	// new owner's began (its last line after the new one's start line).
	overlap time.Duration
	// gap is from the old owner's last effect line to the new owner's
	// first: the margin by which they did not overlap.
	gap time.Duration
	// oldActed is from the loss (SIGSTOP or cut) to the old owner's last
	// effect line; oldEnded whether its command wrote its end line.
	oldActed time.Duration
	oldEnded bool
	// takeover is from the loss to the new owner's start line.
	takeover time.Duration
	// oldExit is the old owner's exit code, oldExitAfter the time from
	// SIGCONT (or the cut) to its exit; signalled says it was SIGTERMed
	// after not exiting by itself.
	oldExit      int
	oldExitAfter time.Duration
	signalled    bool
	newExit      int
}

func (f lossFigures) String() string {
	ended := "killed"
	if f.oldEnded {
		ended = "ended"
	}
	sig := ""
	if f.signalled {
		sig = " after SIGTERM"
	}
	return fmt.Sprintf("trial %2d: overlap %4d ms, gap %5d ms, old acted %5d ms after the loss (%s), takeover after %5d ms, old exit %d%s %5d ms after, new exit %d",
		f.trial, f.overlap.Milliseconds(), f.gap.Milliseconds(), f.oldActed.Milliseconds(), ended, f.takeover.Milliseconds(),
		f.oldExit, sig, f.oldExitAfter.Milliseconds(), f.newExit)
}

// measure reads the effect windows of actors A (old owner) and B (new
// owner) and fills the overlap figures; it fails the trial when A acted
// after B began.
func measure(t *testing.T, effects string, lossAt time.Time, f *lossFigures) (a, b *effectWindow) {
	t.Helper()
	ws := windows(readEffects(t, effects))
	a, b = ws["A"], ws["B"]
	if a == nil || b == nil {
		t.Fatalf("effects of A %v, of B %v: want both", a, b)
	}
	f.gap = b.first.Sub(a.last)
	f.overlap = max(0, -f.gap)
	f.oldActed = a.last.Sub(lossAt)
	f.oldEnded = a.ended
	f.takeover = b.first.Sub(lossAt)
	if f.overlap > 0 {
		t.Errorf("trial %d: A's command (pid %d) acted until %s, %d ms after B's began at %s (A ended: %v)",
			f.trial, a.pid, a.last.Format("15:04:05.000"), f.overlap.Milliseconds(), b.first.Format("15:04:05.000"), a.ended)
	}
	return a, b
}

// summarize logs every trial's figures and the totals.
func summarize(t *testing.T, figs []lossFigures) {
	t.Helper()
	var b strings.Builder
	overlapping := 0
	var worst, minGap, maxActed time.Duration
	minGap = time.Hour
	for _, f := range figs {
		fmt.Fprintln(&b, f)
		if f.overlap > 0 {
			overlapping++
		}
		worst = max(worst, f.overlap)
		minGap = min(minGap, f.gap)
		maxActed = max(maxActed, f.oldActed)
	}
	fmt.Fprintf(&b, "%d trials: %d with overlap (worst %d ms); smallest gap %d ms; old owner acted at most %d ms after the loss (lease TTL %s)",
		len(figs), overlapping, worst.Milliseconds(), minGap.Milliseconds(), maxActed.Milliseconds(), leaseTTL)
	t.Logf("figures:\n%s", b.String())
}

// shownRun is `runs show RUN -o json` in the shape the tests check.
type shownRun struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Stages []struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
		Error    string `json:"error"`
	} `json:"stages"`
	Override *struct {
		Windows string    `json:"windows"`
		By      string    `json:"by"`
		Reason  string    `json:"reason"`
		At      time.Time `json:"at"`
	} `json:"override"`
}

func recordOf(t *testing.T, bin, dir string, env []string, id string) shownRun {
	t.Helper()
	cmd := exec.Command(bin, "runs", "show", id, "-o", "json")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := resultOf(t, cmd.Args, cmd.Run(), &stdout, &stderr)
	if r.code != 0 {
		t.Fatalf("runs show %s: %s", id, r)
	}
	var v shownRun
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("runs show %s: %v\n%s", id, err, r.stdout)
	}
	return v
}

func (r shownRun) node(id string) (status string, attempts int, errText string) {
	for _, n := range r.Stages {
		if n.ID == id {
			return n.Status, n.Attempts, n.Error
		}
	}
	return "", 0, ""
}

// TestLeaseLossSIGSTOP stops the owner of a run (SIGSTOP) while its exec
// stage acts in staging, past its lease; a second actor that needs staging
// takes over with --wait: a resume of the same run (what a team does), or
// another run. Then the old owner gets SIGCONT while the new one acts.
// The old owner's command must have stopped before the new one's begins,
// the old owner must exit 7 (lease lost), and the record must say its
// attempt was fenced.
func TestLeaseLossSIGSTOP(t *testing.T) {
	t.Parallel() // it mostly waits (leases, deadlines): beside the others that do
	bin := buildRelease(t)
	n := leaseLossTrials(t)
	// The variants are separate worlds (their own stores, directories
	// and processes), spending most of their time waiting out leases: they
	// run side by side.
	for _, variant := range []string{"resume", "other-run"} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			var figs []lossFigures
			locked := 0
			for i := 0; len(figs) < n; i++ {
				f, ok := sigstopTrial(t, bin, variant, len(figs)+1)
				if !ok {
					locked++
					if locked > n {
						t.Fatalf("%d of %d stops of A came while it held a lock of the SQLite store", locked, i+1)
					}
					continue
				}
				figs = append(figs, f)
			}
			summarize(t, figs)
			if locked > 0 {
				t.Logf("%d more stops of A came while it held a lock of the SQLite store: B could not open it (database is locked, or locking protocol) until A went on; those trials were made again", locked)
			}
		})
	}
}

// sigstopTrial makes one trial; false when A was stopped holding
// a lock of the SQLite store, so that B could not take over.
func sigstopTrial(t *testing.T, bin, variant string, trial int) (lossFigures, bool) {
	t.Helper()
	f := lossFigures{trial: trial}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), leaseLossPipeline)
	effects := filepath.Join(dir, "effects")

	a := startActor(t, bin, dir, "A", effects, oldOwnerTicks, nil, "run")
	startA := waitEffect(t, effects, a, 30*time.Second)
	a.signal(t, syscall.SIGSTOP)
	stoppedAt := time.Now()

	bArgs := []string{"resume", startA.run, "--wait"}
	if variant == "other-run" {
		bArgs = []string{"run", "--wait"}
	}
	b := startActor(t, bin, dir, "B", effects, newOwnerTicks, nil, bArgs...)
	if _, ok := waitStartUnless(t, effects, b, 30*time.Second, func() bool { return sqliteHeld(b.stderrText()) }); !ok {
		if sqliteHeld(b.stderrText()) {
			// A was stopped inside a write of the SQLite store and holds
			// its lock: nobody can write until A goes on (B waits for it,
			// saying the store is slow, or gives up with SQLITE_BUSY or
			// SQLITE_PROTOCOL). No takeover, no overlap; the trial is made
			// again.
			a.signal(t, syscall.SIGCONT)
			a.waitFor(15 * time.Second)
			if !b.exited() {
				_ = b.cmd.Process.Kill()
				<-b.done
			}
			return f, false
		}
		t.Fatalf("trial %d: B's effect never started: it ended first: %s", trial, b.result(t))
	}
	// The old owner wakes up while the new one acts.
	time.Sleep(300 * time.Millisecond)
	a.signal(t, syscall.SIGCONT)
	contAt := time.Now()

	if !b.waitFor(30 * time.Second) {
		b.hung(t, trial, 30*time.Second)
	}
	rb := b.result(t)
	f.newExit = rb.code
	if !a.waitFor(10 * time.Second) {
		f.signalled = true
		a.signal(t, syscall.SIGTERM)
		if !a.waitFor(5 * time.Second) {
			t.Fatalf("trial %d: A did not exit 15 s after SIGCONT, nor 5 s after SIGTERM", trial)
		}
	}
	ra := a.result(t)
	f.oldExit, f.oldExitAfter = ra.code, a.exitAt.Sub(contAt)

	wa, _ := measure(t, effects, stoppedAt, &f)
	if _, ok := gone(10*time.Second, wa.pid); !ok {
		t.Errorf("trial %d: A's command (pid %d) still runs 10 s after A exited", trial, wa.pid)
	}
	if rb.code != wantExitOK {
		t.Errorf("trial %d: B %s", trial, rb)
	}
	if ra.code != wantExitFenced || f.signalled {
		t.Errorf("trial %d: A exited %d (SIGTERMed: %v) %s after SIGCONT, want %d by itself:\n%s", trial, ra.code, f.signalled, f.oldExitAfter, wantExitFenced, ra)
	}

	// What the record says.
	switch variant {
	case "resume":
		// B found A's attempt still running in the record, recorded it as
		// fenced, and redid it; A's own writes after SIGCONT were refused.
		if !strings.Contains(rb.stderr, "attempt 1 fenced: its owner") {
			t.Errorf("trial %d: B's progress does not record A's attempt as fenced:\n%s", trial, rb.stderr)
		}
		r := recordOf(t, bin, dir, nil, startA.run)
		st, attempts, _ := r.node("effect")
		if r.Status != "succeeded" || st != "succeeded" || attempts != 2 {
			t.Errorf("trial %d: run %s %s, effect %s after %d attempts; want succeeded, succeeded, 2 (A's fenced, B's)", trial, r.ID, r.Status, st, attempts)
		}
	case "other-run":
		// Nobody took A's run over: A records its own attempt as fenced.
		r := recordOf(t, bin, dir, nil, startA.run)
		st, attempts, errText := r.node("effect")
		if r.Status != "fenced" || st != "fenced" || attempts != 1 {
			t.Errorf("trial %d: A's run %s %s, effect %s (%q) after %d attempts; want fenced, fenced, 1", trial, r.ID, r.Status, st, errText, attempts)
		}
	}
	return f, true
}

// blackHole is a TCP proxy to a PostgreSQL server that can stop forwarding
// bytes, in both directions and for new connections, without closing
// anything (a side that closes is not closed on the other side until the
// traffic flows again): what a network partition looks like to both ends.
type blackHole struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	open   chan struct{} // closed while traffic flows
	conns  []net.Conn
	armed  []byte    // when set, the cut comes right after a client sends it
	cutAt  time.Time // when the last cut came
	cutNow chan struct{}
}

func newBlackHole(t *testing.T, upstream string) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackHole{ln: ln, upstream: upstream, open: make(chan struct{}), cutNow: make(chan struct{}, 1)}
	close(p.open)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *blackHole) addr() string { return p.ln.Addr().String() }

// gate returns once traffic flows.
func (p *blackHole) gate() {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	<-open
}

// cut stops forwarding; bytes already read are held, not dropped.
func (p *blackHole) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

func (p *blackHole) cutLocked() {
	select {
	case <-p.open:
		p.open = make(chan struct{})
		p.cutAt = time.Now()
		select {
		case p.cutNow <- struct{}{}:
		default:
		}
	default:
	}
}

// cutAfter arms a cut that comes right after a client has sent text to
// the server: the server gets it, its answer and everything after are
// held.
func (p *blackHole) cutAfter(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = []byte(text)
}

// waitCut waits for an armed cut, and returns when it came.
func (p *blackHole) waitCut(t *testing.T, within time.Duration) time.Time {
	t.Helper()
	select {
	case <-p.cutNow:
	case <-time.After(within):
		t.Fatalf("no client sent %q within %s", p.armed, within)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cutAt
}

// sent is called with what a client sent once it reached the server.
func (p *blackHole) sent(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.armed != nil && bytes.Contains(b, p.armed) {
		p.armed = nil
		p.cutLocked()
	}
}

// heal forwards again what was held, and what comes.
func (p *blackHole) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *blackHole) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *blackHole) close() {
	p.heal()
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *blackHole) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		go func() {
			p.gate()
			u, err := net.Dial("tcp", p.upstream)
			if err != nil {
				c.Close()
				return
			}
			p.track(u)
			go p.pipe(u, c, p.sent)
			p.pipe(c, u, nil)
		}()
	}
}

// pipe copies from src to dst, holding what it read while traffic is cut,
// and sent sees each chunk written.
func (p *blackHole) pipe(dst, src net.Conn, sent func([]byte)) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if sent != nil {
				sent(buf[:n])
			}
		}
		if err != nil {
			p.gate() // a close does not get through a cut either
			return
		}
	}
}

// viaProxy is dsn with its host and port replaced by addr.
func viaProxy(t *testing.T, dsn, addr string) (proxied, upstream string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	upstream = u.Host
	if u.Port() == "" {
		upstream = net.JoinHostPort(u.Hostname(), "5432")
	}
	u.Host = addr
	return u.String(), upstream
}

// TestLeaseLossStoreCut black-holes the owner's PostgreSQL traffic
// (through a proxy that stops forwarding without closing) while its exec
// stage acts in staging; a resume through a direct connection takes the
// run over once the leases expired. The old owner must stop its effect
// before the new owner's begins, and exit (7) by itself within a bound: it
// cannot write its fenced status while the store is cut; the new owner
// records the attempt as fenced on claim.
//
// while-running cuts at a moment when the owner waits for its command;
// mid-renewal cuts right after the server got a renewal's UPDATE of a
// lease row, so that the owner's transaction stays open on the server,
// holding the row, as a partition in the middle of a renewal leaves it
// (the owner speaks the simple protocol there, so that the proxy sees the
// statement's text). It makes fewer trials: a quarter, at least 2.
func TestLeaseLossStoreCut(t *testing.T) {
	t.Parallel() // it mostly waits (leases, deadlines): beside the others that do
	bin := buildRelease(t)
	n := leaseLossTrials(t)
	// Side by side, as in TestLeaseLossSIGSTOP: each mode has its own
	// schema (the trials' runs take the same environment) and each trial
	// its own proxy.
	for _, mode := range []string{"while-running", "mid-renewal"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dsn := postgresSchema(t)
			trials := n
			if mode == "mid-renewal" {
				trials = max(2, n/4)
			}
			var figs []lossFigures
			for i := range trials {
				figs = append(figs, cutTrial(t, bin, dsn, mode, i+1))
			}
			summarize(t, figs)
		})
	}
}

// cutExitBound is how long after the cut the old owner has to exit by
// itself: it knows it lost its leases by their expiry, within one TTL, and
// then tries the writes it still has (its command's last log line, its
// node's status, the run's), each given up after one TTL; one TTL more of
// slack.
const cutExitBound = 5 * leaseTTL

func cutTrial(t *testing.T, bin, dsn, mode string, trial int) lossFigures {
	t.Helper()
	f := lossFigures{trial: trial}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), leaseLossPipeline)
	effects := filepath.Join(dir, "effects")
	_, upstream := viaProxy(t, dsn, "")
	proxy := newBlackHole(t, upstream)
	proxied, _ := viaProxy(t, dsn, proxy.addr())
	if mode == "mid-renewal" {
		proxied += "&default_query_exec_mode=simple_protocol"
	}

	a := startActor(t, bin, dir, "A", effects, oldOwnerTicks, []string{"RELEASE_STATE=" + proxied, "LEASELOSS_PRINT=1"}, "run")
	startA := waitEffect(t, effects, a, 30*time.Second)
	var cutAt time.Time
	switch mode {
	case "mid-renewal":
		proxy.cutAfter("UPDATE leases SET expires_at")
		cutAt = proxy.waitCut(t, 2*leaseTTL)
	default:
		proxy.cut()
		cutAt = time.Now()
	}

	direct := []string{"RELEASE_STATE=" + dsn, "LEASELOSS_PRINT=1"}
	b := startActor(t, bin, dir, "B", effects, newOwnerTicks, direct, "resume", startA.run, "--wait")
	if !b.waitFor(40 * time.Second) {
		b.hung(t, trial, 40*time.Second)
	}
	rb := b.result(t)
	f.newExit = rb.code

	if !a.waitFor(time.Until(cutAt.Add(cutExitBound))) {
		f.signalled = true
		a.signal(t, syscall.SIGTERM)
		if !a.waitFor(5 * time.Second) {
			proxy.heal()
			if !a.waitFor(10 * time.Second) {
				t.Fatalf("trial %d: A did not exit %s after the cut, nor 5 s after SIGTERM, nor 10 s after the store came back", trial, cutExitBound)
			}
			t.Errorf("trial %d: A exited only once the store came back, not 5 s after SIGTERM", trial)
		}
	}
	ra := a.result(t)
	f.oldExit, f.oldExitAfter = ra.code, a.exitAt.Sub(cutAt)
	proxy.heal()

	wa, _ := measure(t, effects, cutAt, &f)
	if _, ok := gone(10*time.Second, wa.pid); !ok {
		t.Errorf("trial %d: A's command (pid %d) still runs 10 s after A exited", trial, wa.pid)
	}
	if rb.code != wantExitOK {
		t.Errorf("trial %d: B %s", trial, rb)
	}
	switch {
	case !f.signalled && ra.code == wantExitFenced:
	case f.signalled && (ra.code == wantExitSignal || ra.code == wantExitFenced):
		t.Errorf("trial %d: A did not exit by itself within %s of the cut; it exited %d %s after the cut once SIGTERMed:\n%s",
			trial, cutExitBound, ra.code, f.oldExitAfter.Round(time.Millisecond), ra)
	default:
		t.Errorf("trial %d: A exited %d (SIGTERMed: %v), want %d:\n%s", trial, ra.code, f.signalled, wantExitFenced, ra)
	}
	if !strings.Contains(rb.stderr, "attempt 1 fenced: its owner") {
		t.Errorf("trial %d: B's progress does not record A's attempt as fenced:\n%s", trial, rb.stderr)
	}
	r := recordOf(t, bin, dir, direct, startA.run)
	st, attempts, _ := r.node("effect")
	if r.Status != "succeeded" || st != "succeeded" || attempts != 2 {
		t.Errorf("trial %d: run %s %s, effect %s after %d attempts; want succeeded, succeeded, 2 (A's fenced, B's)", trial, r.ID, r.Status, st, attempts)
	}
	return f
}
