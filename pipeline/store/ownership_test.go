package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// The cases below are entries of the conformance suite (store_test.go): what
// a run's owner, its approvers and its cancellers may write, and how
// versions are handed out.

// fencedWrite is one kind of write a Fenced view guards, with a way to tell
// from the store's state whether it landed.
type fencedWrite struct {
	name   string
	write  func(ctx context.Context, s pipeline.Store) error
	landed func(st storeState) bool
}

// fencedWrites are the guarded writes of runs, nodes, releases and
// deployments, against a store holding run r1 (sampleRun).
func fencedWrites() []fencedWrite {
	return []fencedWrite{
		{"CreateRun",
			func(ctx context.Context, s pipeline.Store) error {
				return s.CreateRun(ctx, sampleRun("r2", time.Now()))
			},
			func(st storeState) bool { return st.R2 != nil }},
		{"SaveRun",
			func(ctx context.Context, s pipeline.Store) error {
				r := sampleRun("r1", time.Now())
				r.Status, r.Owner = pipeline.Failed, "writer"
				return s.SaveRun(ctx, r)
			},
			func(st storeState) bool { return st.R1.Status == pipeline.Failed && st.R1.Owner == "writer" }},
		{"SaveNodes",
			func(ctx context.Context, s pipeline.Store) error {
				return s.SaveNodes(ctx, "r1", &pipeline.Node{ID: "deploy", Status: pipeline.Running, Attempts: 5, Outputs: stages.Outputs{}})
			},
			func(st storeState) bool { return st.R1.Node("deploy").Attempts == 5 }},
		{"RecordRelease",
			func(ctx context.Context, s pipeline.Store) error {
				return s.RecordRelease(ctx, &pipeline.Release{Version: "9.0.0", Pipeline: "p", RunID: "r1", Commits: map[string]string{}, Images: map[string]string{}, CreatedAt: time.Now()})
			},
			func(st storeState) bool { return st.Release != nil }},
		{"RecordDeployment",
			func(ctx context.Context, s pipeline.Store) error {
				return s.RecordDeployment(ctx, &pipeline.Deployment{Environment: "dev", Version: "9.0.0", RunID: "r1", Kind: "run", At: time.Now()})
			},
			func(st storeState) bool { return len(st.Deployments) > 0 }},
	}
}

// storeState is everything fencedWrites can change.
type storeState struct {
	R1, R2      *pipeline.Run
	Release     *pipeline.Release
	Deployments []*pipeline.Deployment
}

func readState(t *testing.T, s pipeline.Store) storeState {
	t.Helper()
	ctx := context.Background()
	var st storeState
	var err error
	if st.R1, err = s.Run(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if st.R2, err = s.Run(ctx, "r2"); err != nil && !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatal(err)
	}
	if st.Release, err = s.Release(ctx, "9.0.0"); err != nil && !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatal(err)
	}
	if st.Deployments, err = s.Deployments(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	return st
}

// claimRun claims run/r1 for holder and records r1 through the claim.
func claimRun(t *testing.T, s pipeline.Store, holder string, ttl time.Duration) (*pipeline.Lease, pipeline.Store) {
	t.Helper()
	l, err := s.AcquireLease(context.Background(), pipeline.ClaimPrefix+"r1", holder, ttl)
	if err != nil {
		t.Fatal(err)
	}
	view := s.Fenced(l)
	if err := view.CreateRun(context.Background(), sampleRun("r1", time.Now())); err != nil {
		t.Fatalf("CreateRun through a held claim: %v", err)
	}
	return l, view
}

// fencedWhileHeld: every guarded write commits while the claim is held.
// With expired, it still does once the claim expired and nobody took it
// over: the guard compares the lease row's holder and fence, not its
// expiry, which is the heartbeat's to watch. Closing the view leaves the
// store open, and the view too.
func fencedWhileHeld(expired bool) func(t *testing.T, s pipeline.Store) {
	return func(t *testing.T, s pipeline.Store) {
		ctx := context.Background()
		ttl := time.Minute
		if expired {
			ttl = 50 * time.Millisecond
		}
		_, view := claimRun(t, s, "owner-a", ttl)
		if expired {
			time.Sleep(80 * time.Millisecond)
		}
		for _, w := range fencedWrites() {
			if err := w.write(ctx, view); err != nil {
				t.Errorf("%s through a held claim: %v", w.name, err)
			}
		}
		st := readState(t, s)
		for _, w := range fencedWrites() {
			if !w.landed(st) {
				t.Errorf("%s through a held claim did not land", w.name)
			}
		}
		if err := view.Close(); err != nil {
			t.Errorf("closing the view: %v", err)
		}
		if _, err := s.Run(ctx, "r1"); err != nil {
			t.Errorf("reading the store after closing a view of it: %v", err)
		}
		if err := view.SaveRun(ctx, st.R1); err != nil {
			t.Errorf("writing through a closed view: %v", err)
		}
	}
}

// fencedAfterTakeover: once another holder has the claim (the old one
// expired, then AcquireLease), every guarded write through the old view
// fails with ErrLeaseLost and changes nothing; the new holder's view writes.
func fencedAfterTakeover(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	old, oldView := claimRun(t, s, "owner-a", 50*time.Millisecond)
	time.Sleep(80 * time.Millisecond)
	l, err := s.AcquireLease(ctx, old.Name, "owner-b", time.Minute)
	if err != nil {
		t.Fatalf("take over an expired claim: %v", err)
	}
	before := readState(t, s)
	for _, w := range fencedWrites() {
		if err := w.write(ctx, oldView); !errors.Is(err, pipeline.ErrLeaseLost) {
			t.Errorf("%s through a claim taken over: error = %v, want ErrLeaseLost", w.name, err)
		}
	}
	if diff := cmp.Diff(before, readState(t, s), timeEqual, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("writes through a lost claim changed the store (-before +after):\n%s", diff)
	}
	// The old view stays lost when the new holder lets go: the fence moved.
	if err := s.ReleaseLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := oldView.SaveRun(ctx, sampleRun("r1", time.Now())); !errors.Is(err, pipeline.ErrLeaseLost) {
		t.Errorf("SaveRun through a claim taken over and released: error = %v, want ErrLeaseLost", err)
	}
	l, err = s.AcquireLease(ctx, old.Name, "owner-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	newView := s.Fenced(l)
	for _, w := range fencedWrites() {
		if err := w.write(ctx, newView); err != nil {
			t.Errorf("%s through the new holder's claim: %v", w.name, err)
		}
	}
}

// fencedAfterRelease: ReleaseLease clears the holder (and keeps the fence),
// so a view of a released claim no longer matches the row and its writes
// fail with ErrLeaseLost, although nobody claimed the run since. An owner
// that let go of a run has no business writing it. Claiming again, even
// under the same holder name, makes a new fence: the old view stays lost.
func fencedAfterRelease(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	l, view := claimRun(t, s, "owner-a", time.Minute)
	if err := s.ReleaseLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	before := readState(t, s)
	for _, w := range fencedWrites() {
		if err := w.write(ctx, view); !errors.Is(err, pipeline.ErrLeaseLost) {
			t.Errorf("%s through a released claim: error = %v, want ErrLeaseLost", w.name, err)
		}
	}
	if _, err := s.AcquireLease(ctx, l.Name, l.Holder, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := view.SaveRun(ctx, sampleRun("r1", time.Now())); !errors.Is(err, pipeline.ErrLeaseLost) {
		t.Errorf("SaveRun through a view of an earlier claim by the same holder: error = %v, want ErrLeaseLost", err)
	}
	if diff := cmp.Diff(before, readState(t, s), timeEqual, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("writes through a released claim changed the store (-before +after):\n%s", diff)
	}
}

// fencedTakeoverRace: writers of the old owner save attempts 1, 2, 3, …
// in a loop through their view, each write a batch of nodes in one
// transaction (as the executor batches them), while another holder takes
// the expired claim over. No write that started after the takeover
// returned commits, and none commits after the takeover at all: what the
// store holds right after it is each writer's last successful write, whole,
// and the new owner's later marker is what stays. The batches make the time
// between a write's lease check and its commit long, so a check that does
// not hold the lease row until the commit lets a write land after the
// takeover, and this test sees it (19 runs in 20 on PostgreSQL without
// FOR SHARE). The writers are fewer than PostgreSQL's pool of connections
// so the takeover and the read right after it do not queue behind them.
func fencedTakeoverRace(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	const writers, batch = 3, 100
	nodeID := func(w, j int) string { return fmt.Sprintf("n%d-%d", w, j) }
	r := sampleRun("r1", time.Now())
	r.Nodes = nil
	for w := range writers {
		for j := range batch {
			r.Nodes = append(r.Nodes, &pipeline.Node{ID: nodeID(w, j), Stage: "s", Needs: []string{}, Status: pipeline.Pending, Outputs: stages.Outputs{}})
		}
	}
	old, err := s.AcquireLease(ctx, pipeline.ClaimPrefix+"r1", "owner-a", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	oldView := s.Fenced(old)
	if err := oldView.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}

	taken := make(chan struct{}) // closed once AcquireLease returned
	stop := make(chan struct{})
	type tally struct {
		last     int          // attempts of the last write that returned nil
		ok       atomic.Int64 // writes that returned nil
		late     int          // of those, writes started after the takeover
		lateLost atomic.Int64 // writes started after the takeover, refused
	}
	tallies := make([]*tally, writers)
	var wg sync.WaitGroup
	for w := range writers {
		tl := &tally{}
		tallies[w] = tl
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes := make([]*pipeline.Node, batch)
			for j := range nodes {
				nodes[j] = &pipeline.Node{ID: nodeID(w, j), Status: pipeline.Running, Outputs: stages.Outputs{}}
			}
			for attempt := 1; ; attempt++ {
				select {
				case <-stop:
					return
				default:
				}
				after := false
				select {
				case <-taken:
					after = true
				default:
				}
				for _, n := range nodes {
					n.Attempts = attempt
				}
				err := oldView.SaveNodes(ctx, "r1", nodes...)
				switch {
				case err == nil:
					tl.last = attempt
					tl.ok.Add(1)
					if after {
						tl.late++
					}
				case errors.Is(err, pipeline.ErrLeaseLost):
					if after {
						tl.lateLost.Add(1)
					}
				default:
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Let every writer land writes while the claim is held, and past its
	// expiry, then take it over.
	waitFor(t, "every writer to land a write", func() bool {
		for _, tl := range tallies {
			if tl.ok.Load() == 0 {
				return false
			}
		}
		return true
	})
	// The takeover gets a deadline, not a time to beat: it fails where a
	// stream of writes starves it rather than hang (a share lock on the
	// lease row once made it wait for minutes).
	time.Sleep(time.Until(old.Expires) + 20*time.Millisecond)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	l, err := s.AcquireLease(tctx, old.Name, "owner-b", time.Minute)
	cancel()
	if err != nil {
		t.Fatalf("take over the expired claim while the old owner writes: %v", err)
	}
	close(taken)
	atTakeover, err := s.Run(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	attemptsAtTakeover := map[string]int{}
	for _, n := range atTakeover.Nodes {
		attemptsAtTakeover[n.ID] = n.Attempts
	}
	newView := s.Fenced(l)
	const marker = 1_000_000
	for _, n := range atTakeover.Nodes {
		n.Attempts = marker
	}
	if err := newView.SaveNodes(ctx, "r1", atTakeover.Nodes...); err != nil {
		t.Fatalf("the new owner's write: %v", err)
	}
	waitFor(t, "every writer to be refused 20 times after the takeover", func() bool {
		for _, tl := range tallies {
			if tl.lateLost.Load() < 20 {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()

	final, err := s.Run(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	for w, tl := range tallies {
		if tl.late > 0 {
			t.Errorf("writer %d: %d writes of the old owner started after the takeover and committed", w, tl.late)
		}
		var then, now []int
		for j := range batch {
			then = append(then, attemptsAtTakeover[nodeID(w, j)])
			now = append(now, final.Node(nodeID(w, j)).Attempts)
		}
		if want := slices.Repeat([]int{tl.last}, batch); !slices.Equal(want, then) {
			t.Errorf("writer %d: attempts right after the takeover %v, want the old owner's last committed write, %d, in every node", w, then, tl.last)
		}
		if want := slices.Repeat([]int{marker}, batch); !slices.Equal(want, now) {
			t.Errorf("writer %d: attempts at the end %v, want the new owner's %d in every node: an old write landed after it", w, now, marker)
		}
	}
	var ok, lost int64
	for _, tl := range tallies {
		ok, lost = ok+tl.ok.Load(), lost+tl.lateLost.Load()
	}
	t.Logf("old owner: %d writes of %d nodes committed before the takeover, %d refused after it", ok, batch, lost)
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bumpMinor picks the newest version taken, bumped by a minor, or 1.0.0.
func bumpMinor(taken []string) (string, error) {
	var newest *semver.Version
	for _, t := range taken {
		v, err := semver.NewVersion(t)
		if err != nil {
			return "", err
		}
		if newest == nil || v.GreaterThan(newest) {
			newest = v
		}
	}
	if newest == nil {
		return "1.0.0", nil
	}
	return newest.IncMinor().String(), nil
}

// versionsConcurrent: 8 goroutines take 25 versions each of one pipeline,
// each the newest taken bumped: all 200 are distinct, and since each is
// picked from what was committed, they are 1.0.0 to 1.199.0 without a gap.
func versionsConcurrent(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	const goroutines, each = 8, 25
	got := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v, err := s.AllocateVersion(ctx, "p", fmt.Sprintf("r%d-%d", g, i), bumpMinor)
				if err != nil {
					t.Errorf("allocation %d of goroutine %d: %v", i, g, err)
					return
				}
				got[g] = append(got[g], v)
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(got...)
	var want []string
	for i := range goroutines * each {
		want = append(want, fmt.Sprintf("1.%d.0", i))
	}
	sortSemver(all)
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("versions handed out (-want +got):\n%s", diff)
	}
}

func sortSemver(vs []string) {
	sort.Slice(vs, func(i, j int) bool { return semver.MustParse(vs[i]).LessThan(semver.MustParse(vs[j])) })
}

// takenOf is what pick sees of a pipeline's versions, sorted; it
// allocates nothing.
func takenOf(t *testing.T, s pipeline.Store, pipe string) []string {
	t.Helper()
	var seen []string
	stopPick := errors.New("only looking")
	_, err := s.AllocateVersion(context.Background(), pipe, "looker", func(taken []string) (string, error) {
		seen = slices.Clone(taken)
		return "", stopPick
	})
	if !errors.Is(err, stopPick) {
		t.Fatalf("AllocateVersion with a failing pick: error = %v, want the pick's", err)
	}
	sortSemver(seen)
	return seen
}

// versionsPerPipeline: a pipeline's pick sees only its own versions, and
// two pipelines may hand out the same one.
func versionsPerPipeline(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	for _, a := range []struct{ pipe, run, want string }{
		{"p", "r1", "1.0.0"}, {"q", "r2", "1.0.0"}, {"p", "r3", "1.1.0"}, {"p", "r4", "1.2.0"}, {"q", "r5", "1.1.0"},
	} {
		v, err := s.AllocateVersion(ctx, a.pipe, a.run, bumpMinor)
		if err != nil || v != a.want {
			t.Errorf("AllocateVersion(%s, %s) = %q, %v; want %s", a.pipe, a.run, v, err, a.want)
		}
	}
	if diff := cmp.Diff([]string{"1.0.0", "1.1.0", "1.2.0"}, takenOf(t, s, "p")); diff != "" {
		t.Errorf("versions of p (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"1.0.0", "1.1.0"}, takenOf(t, s, "q")); diff != "" {
		t.Errorf("versions of q (-want +got):\n%s", diff)
	}
}

// versionsPickError: the pick's own error comes back as is, and nothing
// was allocated; a pick that names a taken version is refused.
func versionsPickError(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	if _, err := s.AllocateVersion(ctx, "p", "r1", bumpMinor); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("--version 1.0.0: taken")
	v, err := s.AllocateVersion(ctx, "p", "r2", func(taken []string) (string, error) { return "", refused })
	if !errors.Is(err, refused) || v != "" {
		t.Errorf("AllocateVersion with a failing pick = %q, %v; want the pick's error", v, err)
	}
	if diff := cmp.Diff([]string{"1.0.0"}, takenOf(t, s, "p")); diff != "" {
		t.Errorf("versions after a failing pick (-want +got):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if v, err := s.AllocateVersion(ctx, "p", "r3", func([]string) (string, error) { return "1.0.0", nil }); err == nil {
		t.Errorf("AllocateVersion of a taken version = %q, want an error", v)
	}
}

// versionsFree: FreeVersion gives a version back only to the run it was
// allocated to, and only while no run with that id was recorded.
func versionsFree(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	for _, run := range []string{"r1", "r2"} {
		if _, err := s.AllocateVersion(ctx, "p", run, bumpMinor); err != nil {
			t.Fatal(err)
		}
	}
	// r1 has 1.0.0, r2 has 1.1.0; r2 gets recorded.
	r2 := sampleRun("r2", time.Now())
	r2.Version = "1.1.0"
	if err := s.CreateRun(ctx, r2); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ pipe, version, run string }{
		{"q", "1.0.0", "r1"}, // another pipeline
		{"p", "1.0.0", "r2"}, // another run's
		{"p", "1.1.0", "r2"}, // a run recorded under it
	} {
		if err := s.FreeVersion(ctx, f.pipe, f.version, f.run); err != nil {
			t.Errorf("FreeVersion(%s, %s, %s): %v", f.pipe, f.version, f.run, err)
		}
	}
	if diff := cmp.Diff([]string{"1.0.0", "1.1.0"}, takenOf(t, s, "p")); diff != "" {
		t.Errorf("versions after FreeVersion calls that must not free (-want +got):\n%s", diff)
	}
	if err := s.FreeVersion(ctx, "p", "1.0.0", "r1"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"1.1.0"}, takenOf(t, s, "p")); diff != "" {
		t.Errorf("versions after freeing r1's (-want +got):\n%s", diff)
	}
	if v, err := s.AllocateVersion(ctx, "p", "r3", func([]string) (string, error) { return "1.0.0", nil }); err != nil || v != "1.0.0" {
		t.Errorf("allocating a freed version = %q, %v", v, err)
	}
}

// approveWaitingOnly: Approve sets the approval of the nodes that wait,
// and nothing else: a running node is left exactly as its owner wrote it,
// and a waiting node keeps its status, attempts and outputs.
func approveWaitingOnly(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	r := sampleRun("r1", time.Now())
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	started := time.Now().UTC()
	build, deploy := r.Nodes[0], r.Nodes[1]
	build.Status, build.Attempts, build.Outputs, build.StartedAt = pipeline.Running, 3, stages.Outputs{"image": "reg/api@sha256:aa"}, &started
	deploy.Status, deploy.Attempts, deploy.Outputs, deploy.Error = pipeline.Waiting, 1, stages.Outputs{"gate": "prod"}, "waits for approval"
	if err := s.SaveNodes(ctx, "r1", build, deploy); err != nil {
		t.Fatal(err)
	}
	a := &stages.Approval{By: "alice", At: time.Now().UTC()}
	got, err := s.Approve(ctx, "r1", []string{"build[api]", "deploy", "ghost"}, a)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"deploy"}, got); diff != "" {
		t.Errorf("approved (-want +got):\n%s", diff)
	}
	deploy.Approval = a
	back, err := s.Run(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r.Nodes, back.Nodes, timeEqual, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("nodes after Approve (-want +got):\n%s", diff)
	}
	if got, err := s.Approve(ctx, "nope", []string{"deploy"}, a); err != nil || len(got) != 0 {
		t.Errorf("Approve of an unknown run = %v, %v; want nothing approved", got, err)
	}
}

// cancelOnce: a cancel request is recorded once; the second gets
// ErrAlreadyCancelled and keeps the first. The owner's SaveRun, which does
// not know of the request, leaves it. Cancel and Override read back as
// written.
func cancelOnce(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	r := sampleRun("r1", time.Now())
	r.Override = &pipeline.Override{By: "bob", Reason: "hotfix", At: time.Now().UTC(), Windows: []string{"friday", "xmas"}}
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	first := pipeline.Cancel{By: "alice", At: time.Now().UTC()}
	if err := s.RequestCancel(ctx, "r1", first); err != nil {
		t.Fatal(err)
	}
	if err := s.RequestCancel(ctx, "r1", pipeline.Cancel{By: "carol", At: time.Now().UTC()}); !errors.Is(err, pipeline.ErrAlreadyCancelled) {
		t.Errorf("second RequestCancel: error = %v, want ErrAlreadyCancelled", err)
	}
	r.Status = pipeline.Running
	if err := s.SaveRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	back, err := s.Run(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&first, back.Cancel); diff != "" {
		t.Errorf("cancel (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(r.Override, back.Override); diff != "" {
		t.Errorf("override (-want +got):\n%s", diff)
	}
	if err := s.RequestCancel(ctx, "nope", first); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("RequestCancel of an unknown run: error = %v, want ErrNotFound", err)
	}
}

// schema2 is the schema of migrations 1 and 2 as they shipped, with
// {{serial}} left for the dialect: a store that a release before
// migration 3 wrote.
const schema2 = `
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);
INSERT INTO schema_migrations (version, applied_at) VALUES (1, '2026-01-01T00:00:00Z'), (2, '2026-01-01T00:00:00Z');
CREATE TABLE runs (
	id TEXT PRIMARY KEY, kind TEXT NOT NULL, pipeline TEXT NOT NULL, environment TEXT NOT NULL,
	version TEXT NOT NULL, status TEXT NOT NULL, plan_hash TEXT NOT NULL,
	commits TEXT NOT NULL, images TEXT NOT NULL, params TEXT NOT NULL,
	started_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE nodes (
	run_id TEXT NOT NULL REFERENCES runs(id), id TEXT NOT NULL, seq INTEGER NOT NULL,
	stage TEXT NOT NULL, item TEXT NOT NULL, environment TEXT NOT NULL, needs TEXT NOT NULL,
	status TEXT NOT NULL, attempts INTEGER NOT NULL, outputs TEXT NOT NULL, error TEXT NOT NULL,
	approval TEXT, started_at TEXT, finished_at TEXT,
	PRIMARY KEY (run_id, id));
CREATE TABLE logs (
	seq {{serial}}, run_id TEXT NOT NULL, node TEXT NOT NULL,
	at TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX logs_run ON logs (run_id, node, seq);
CREATE TABLE releases (
	version TEXT PRIMARY KEY, pipeline TEXT NOT NULL, run_id TEXT NOT NULL,
	commits TEXT NOT NULL, images TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE deployments (
	seq {{serial}}, environment TEXT NOT NULL, version TEXT NOT NULL,
	run_id TEXT NOT NULL, kind TEXT NOT NULL, images TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX deployments_env ON deployments (environment, seq);
CREATE TABLE leases (
	name TEXT PRIMARY KEY, holder TEXT NOT NULL, fence BIGINT NOT NULL, expires_at TEXT NOT NULL);
INSERT INTO runs (id, kind, pipeline, environment, version, status, plan_hash, commits, images, params, started_at, finished_at) VALUES
	('r1', 'run', 'p', '', '1.4.0', 'cancelled', 'h', '{}', '{}',
	 '{"bump":"minor","skipReason":"no changes","schedule":"nightly","stages":"a,b","cancelledBy":"alice","forced":"w1,w2","forcedBy":"bob","forceReason":"hotfix","pid":"4242","host":"ci-7"}',
	 '2026-03-01T10:00:00Z', NULL),
	('r0', 'run', 'p', '', '1.3.0', 'succeeded', 'h', '{}', '{}', '{"bump":"minor"}', '2026-02-01T10:00:00Z', '2026-02-01T10:05:00Z'),
	('rb', 'rollback', 'p', 'prod', '1.2.0', 'succeeded', 'h', '{}', '{}', '{}', '2026-03-02T10:00:00Z', '2026-03-02T10:01:00Z');
INSERT INTO nodes (run_id, id, seq, stage, item, environment, needs, status, attempts, outputs, error) VALUES
	('r1', 'a', 0, 'a', '', '', '[]', 'cancelled', 1, '{}', 'cancelled by alice');`

// TestMigration3 opens a store at schema 2 whose run kept in its params
// what migration 3 makes typed: the fields come over, the moved keys leave
// params, and the versions table holds the versions runs of kind "run" had.
func TestMigration3(t *testing.T) {
	type migrated struct {
		Params     map[string]string
		SkipReason string
		Schedule   string
		Stages     []string
		Cancel     *pipeline.Cancel
		Override   *pipeline.Override
		Versions   [][3]string // pipeline, version, run id
	}
	started := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	want := migrated{
		Params:     map[string]string{"bump": "minor"},
		SkipReason: "no changes",
		Schedule:   "nightly",
		Stages:     []string{"a", "b"},
		Cancel:     &pipeline.Cancel{By: "alice", At: started},
		Override:   &pipeline.Override{By: "bob", Reason: "hotfix", At: started, Windows: []string{"w1", "w2"}},
		Versions:   [][3]string{{"p", "1.3.0", "r0"}, {"p", "1.4.0", "r1"}},
	}
	for name, old := range map[string]func(t *testing.T) (raw *sql.DB, dsn string){
		"sqlite":   schema2SQLite,
		"postgres": schema2Postgres,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			raw, dsn := old(t)
			s, err := store.Open(ctx, dsn)
			if err != nil {
				t.Fatalf("open a schema 2 store: %v", err)
			}
			defer s.Close()
			r, err := s.Run(ctx, "r1")
			if err != nil {
				t.Fatal(err)
			}
			got := migrated{Params: r.Params, SkipReason: r.SkipReason, Schedule: r.Schedule, Stages: r.Stages, Cancel: r.Cancel, Override: r.Override}
			rows, err := raw.QueryContext(ctx, `SELECT pipeline, version, run_id FROM versions ORDER BY pipeline, version`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var v [3]string
				if err := rows.Scan(&v[0], &v[1], &v[2]); err != nil {
					t.Fatal(err)
				}
				got.Versions = append(got.Versions, v)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("after migration 3 (-want +got):\n%s", diff)
			}
			// A run without moved keys keeps its params and gets no typed ones.
			r0, err := s.Run(ctx, "r0")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(map[string]string{"bump": "minor"}, r0.Params); diff != "" || r0.Cancel != nil || r0.Override != nil || r0.Stages != nil {
				t.Errorf("r0 after migration 3: params (-want +got):\n%s cancel %v, override %v, stages %q", diff, r0.Cancel, r0.Override, r0.Stages)
			}
			var version int
			if err := raw.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&version); err != nil || version != store.SchemaVersion {
				t.Errorf("schema version %d, %v; want %d", version, err, store.SchemaVersion)
			}
		})
	}
}

// schema2SQLite writes a schema 2 store file; raw reads it beside the store.
func schema2SQLite(t *testing.T) (*sql.DB, string) {
	path := filepath.Join(t.TempDir(), "state.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Exec(serial(schema2, "INTEGER PRIMARY KEY AUTOINCREMENT")); err != nil {
		t.Fatalf("build schema 2: %v", err)
	}
	return raw, path
}

// schema2Postgres builds schema 2 in a schema of its own, as openPostgres
// gives each test.
func schema2Postgres(t *testing.T) (*sql.DB, string) {
	ctx := context.Background()
	dsn := postgresDSN() + "&search_path=" + postgresSchema(t, "m3")
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.ExecContext(ctx, serial(schema2, "BIGSERIAL PRIMARY KEY")); err != nil {
		t.Fatalf("build schema 2: %v", err)
	}
	return raw, dsn
}

func serial(ddl, key string) string {
	return strings.ReplaceAll(ddl, "{{serial}}", key)
}
