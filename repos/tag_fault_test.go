package repos

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/gitserver"
	"github.com/sweepboard/release/stages"
)

// faultyGit serves tr's bare repos over HTTP; before a request reaches git
// http-backend, fault may answer it instead (it returns true) or change the
// repos. It records "METHOD /NAME.git/..." of every request.
type faultyGit struct {
	URL string

	mu       sync.Mutex
	fault    func(w http.ResponseWriter, r *http.Request) bool
	requests []string
}

func serveFaulty(t *testing.T, tr *train) *faultyGit {
	t.Helper()
	h, err := gitserver.New(tr.root, "")
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyGit{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		fault := f.fault
		f.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *faultyGit) setFault(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = fn
}

// count is how many requests were "METHOD PATH" with PATH ending in suffix.
func (f *faultyGit) count(method, suffix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, method+" ") && strings.HasSuffix(r, suffix) {
			n++
		}
	}
	return n
}

func (f *faultyGit) spec(tr *train) *stages.Spec {
	spec := tr.spec()
	for name, r := range spec.Repos {
		r.URL = f.URL + "/" + name + ".git"
		spec.Repos[name] = r
	}
	return spec
}

// A push that fails on the way (HTTP 502 from a proxy in front of the
// remote) is tried again with backoff, a bounded number of times; once the
// fault persists beyond them the error names the repo, the remote and the
// status, and the next Tag pushes only what is missing, once.
func TestTagTransientPushFailure(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 3)
	git := serveFaulty(t, tr)
	spec := git.spec(tr)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(spec, work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr.pushes(t)

	// fail502 answers the first n pushes to repo02 with 502.
	fail502 := func(n int) {
		left := n
		git.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPost || r.URL.Path != "/repo02.git/git-receive-pack" || left == 0 {
				return false
			}
			left--
			http.Error(w, "upstream unavailable", http.StatusBadGateway)
			return true
		})
	}
	const backoff = 20 * time.Millisecond
	set := func() *Set {
		s := New(spec, work)
		s.gitBackoff = backoff
		return s
	}

	// Two failures, then the third attempt lands.
	fail502(2)
	start := time.Now()
	results, err := set().Tag(ctx, "1.0.0", pinned, TagOptions{})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all(tr.names, Pushed), outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	posts := git.count("POST", "/repo02.git/git-receive-pack")
	t.Logf("repo02: %d push attempts (2 answered 502), Tag took %v; backoff waits at least %v", posts, took, backoff+2*backoff)
	if posts != 3 {
		t.Errorf("push attempts to repo02 = %d, want 3", posts)
	}
	if took < 3*backoff {
		t.Errorf("Tag took %v, less than its backoff waits %v", took, 3*backoff)
	}
	got := tr.pushes(t)
	if len(got) != 3 || strings.Count(strings.Join(got, " "), "repo02") != 1 {
		t.Errorf("pushes that reached the repos = %v, want each once", got)
	}

	// A fault that outlasts the attempts.
	fail502(100)
	before := git.count("POST", "/repo02.git/git-receive-pack")
	results, err = set().Tag(ctx, "1.1.0", pinned, TagOptions{})
	if err == nil {
		t.Fatal("Tag succeeded through a lasting 502")
	}
	t.Logf("lasting 502: %v", err)
	for _, want := range []string{"repo02", git.URL + "/repo02.git", "502", "(gave up after 3 attempts)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	var rejected *RejectedError
	if errors.As(err, &rejected) {
		t.Errorf("a 502 is taken for a refusal: %v", err)
	}
	if n := git.count("POST", "/repo02.git/git-receive-pack") - before; n != 3 {
		t.Errorf("push attempts to repo02 = %d, want 3", n)
	}
	want := map[string]Outcome{"repo01": Pushed, "repo02": Failed, "repo03": Pushed}
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	tr.pushes(t)

	// The remote answers again: the next Tag pushes repo02 alone.
	git.setFault(nil)
	results, err = set().Tag(ctx, "1.1.0", pinned, TagOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]Outcome{"repo01": Adopted, "repo02": Pushed, "repo03": Adopted}
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("resume outcomes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"repo02"}, tr.pushes(t)); diff != "" {
		t.Errorf("resume pushes (-want +got):\n%s", diff)
	}
	for _, name := range tr.names {
		checkAnnotated(t, tr.remotes[name].Bare, "v1.0.0", pinned[name])
		checkAnnotated(t, tr.remotes[name].Bare, "v1.1.0", pinned[name])
	}
}

// A tag that appears at another commit between the check and the push (a
// second release process, a person) is a conflict naming both commits, not
// a forced push and not a retry loop; the repos pushed before it keep their
// tag, and the next Tag stops at its check, pushing nothing.
func TestTagAppearsAfterCheck(t *testing.T) {
	ctx := context.Background()
	tr := newTrain(t, 3)
	git := serveFaulty(t, tr)
	spec := git.spec(tr)
	work := filepath.Join(tr.root, ".release")
	pinned, err := New(spec, work).Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r3 := tr.remotes["repo03"]
	other := gitCLI(t, r3.Work, "rev-parse", "HEAD~1")
	tr.pushes(t)

	// The push's ref advertisement is the first request after the check:
	// someone tags repo03 at another commit just before it is answered.
	var tagErr error
	var once sync.Once
	git.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/repo03.git/info/refs" && r.URL.Query().Get("service") == "git-receive-pack" {
			once.Do(func() {
				out, err := exec.Command("git", "-C", r3.Bare, "tag", "v2.0.0", other).CombinedOutput()
				if err != nil {
					tagErr = errors.New(string(out))
				}
			})
		}
		return false
	})
	results, err := New(spec, work).Tag(ctx, "2.0.0", pinned, TagOptions{})
	if tagErr != nil {
		t.Fatalf("tag repo03 behind Tag's back: %v", tagErr)
	}
	if err == nil {
		t.Fatal("Tag succeeded over a tag that appeared after its check")
	}
	t.Logf("appeared after the check: %v", err)
	var conflict *ConflictError
	if !errors.As(err, &conflict) {
		t.Errorf("error %q is not a *ConflictError", err)
	}
	for _, want := range []string{"repo03", "v2.0.0", other, pinned["repo03"]} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	want := map[string]Outcome{"repo01": Pushed, "repo02": Pushed, "repo03": Failed}
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if n := git.count("POST", "/repo03.git/git-receive-pack"); n != 0 {
		t.Errorf("%d pushes sent to repo03", n)
	}
	if got := lsTags(t, r3.Bare)["refs/tags/v2.0.0"]; got != other {
		t.Errorf("repo03's v2.0.0 = %s, want the other commit %s untouched", got, other)
	}
	tr.pushes(t)

	git.setFault(nil)
	results, err = New(spec, work).Tag(ctx, "2.0.0", pinned, TagOptions{})
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "nothing pushed") {
		t.Errorf("re-run: err = %v, want a conflict found by the check", err)
	}
	want = map[string]Outcome{"repo01": Adopted, "repo02": Adopted, "repo03": Failed}
	if diff := cmp.Diff(want, outcomes(results)); diff != "" {
		t.Errorf("re-run outcomes (-want +got):\n%s", diff)
	}
	if got := tr.pushes(t); len(got) != 0 {
		t.Errorf("re-run pushed to %v", got)
	}
}
