package repos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// BenchmarkTag50 tags and pushes 50 repos with local bare remotes three
// ways in each iteration, side by side, each against its own 50 remotes:
// Set.Tag, a sequential `git tag -a` + `git push` loop, and the same loop
// run by 8 goroutines (Set.Tag's default parallelism). The three times per
// iteration are reported as repos-ms, git-seq-ms and git-par-ms; ns/op is
// their sum. Every iteration pushes a new version.
//
//	go test -run '^$' -bench Tag50 -benchtime 5x ./repos
func BenchmarkTag50(b *testing.B) {
	const n = 50
	ctx := context.Background()
	mk := func(kind string) (*train, map[string]string) {
		tr := &train{root: filepath.Join(b.TempDir(), kind), remotes: map[string]*remoteRepo{}}
		if err := os.MkdirAll(tr.root, 0o755); err != nil {
			b.Fatal(err)
		}
		heads := map[string]string{}
		for i := 1; i <= n; i++ {
			name := fmt.Sprintf("repo%02d", i)
			r := newRemote(b, tr.root, name, "feat: init", "fix: second")
			tr.remotes[name], heads[name] = r, r.head()
			tr.names = append(tr.names, name)
		}
		return tr, heads
	}
	ours, pinned := mk("repos")
	seq, seqHeads := mk("git-seq")
	par, parHeads := mk("git-par")
	work := filepath.Join(ours.root, ".release")
	// The mirrors exist once a run has pinned its commits: warm them.
	if _, err := New(ours.spec(), work).Heads(ctx); err != nil {
		b.Fatal(err)
	}

	gitTagPush := func(r *remoteRepo, tag, sha string) error {
		for _, args := range [][]string{
			{"tag", "-a", "-m", "Release " + tag, tag, sha},
			{"push", "-q", "origin", "refs/tags/" + tag},
		} {
			cmd := exec.Command("git", args...)
			cmd.Dir = r.Work
			cmd.Env = append(os.Environ(), gitEnv...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("git %v: %v: %s", args, err, out)
			}
		}
		return nil
	}

	var oursT, seqT, parT time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tag := fmt.Sprintf("v1.%d.0", i)

		start := time.Now()
		// A fresh Set, as each run of the git-tag stage builds one.
		results, err := New(ours.spec(), work).Tag(ctx, tag, pinned, TagOptions{})
		if err != nil {
			b.Fatal(err)
		}
		oursT += time.Since(start)
		for _, r := range results {
			if r.Outcome != Pushed {
				b.Fatalf("%s: %s", r.Repo, r.Outcome)
			}
		}

		start = time.Now()
		for _, name := range seq.names {
			if err := gitTagPush(seq.remotes[name], tag, seqHeads[name]); err != nil {
				b.Fatal(err)
			}
		}
		seqT += time.Since(start)

		start = time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, DefaultParallel)
		errs := make(chan error, n)
		for _, name := range par.names {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := gitTagPush(par.remotes[name], tag, parHeads[name]); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		parT += time.Since(start)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(oursT), "repos-ms")
	b.ReportMetric(ms(seqT), "git-seq-ms")
	b.ReportMetric(ms(parT), "git-par-ms")
}
