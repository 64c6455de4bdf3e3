package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// benchStores open a fresh store of each kind for a benchmark.
func benchStores() map[string]func(b *testing.B) pipeline.Store {
	return map[string]func(b *testing.B) pipeline.Store{
		"sqlite": func(b *testing.B) pipeline.Store {
			s, err := store.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "state.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(b *testing.B) pipeline.Store { return openPostgres(b) },
	}
}

// BenchmarkStores measures, side by side on SQLite and PostgreSQL, the
// durable status changes per second (one node's status committed per
// transaction, as the executor does when nodes finish one at a time) and
// the median time to acquire a free lease.
func BenchmarkStores(b *testing.B) {
	stores := benchStores()
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name+"/status-change", func(b *testing.B) {
			s := stores[name](b)
			ctx := context.Background()
			r := sampleRun("bench", time.Now())
			if err := s.CreateRun(ctx, r); err != nil {
				b.Fatal(err)
			}
			n := r.Nodes[0]
			b.ResetTimer()
			for i := range b.N {
				n.Attempts = i
				if err := s.SaveNodes(ctx, r.ID, n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
		})
		b.Run(name+"/lease-acquire", func(b *testing.B) {
			s := stores[name](b)
			ctx := context.Background()
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				l, err := s.AcquireLease(ctx, "env/bench", "holder", time.Minute)
				times = append(times, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if err := s.ReleaseLease(ctx, l); err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-acquire-ms")
		})
	}
}

// BenchmarkOpenSQLite measures what the corruption check costs when a
// SQLite store opens: a store of 1000 runs (14 nodes and 40 log lines each,
// a release and three deployments per run) is opened and closed (open),
// and PRAGMA quick_check alone runs on it (quick_check). The file's size is
// reported beside them.
func BenchmarkOpenSQLite(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "state.db")
	s, err := store.OpenSQLite(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		r := bigRun(fmt.Sprintf("run-%04d", i), time.Now().Add(time.Duration(i)*time.Minute))
		if err := s.CreateRun(ctx, r); err != nil {
			b.Fatal(err)
		}
		lines := make([]pipeline.LogLine, 40)
		for j := range lines {
			lines[j] = pipeline.LogLine{Node: r.Nodes[j%len(r.Nodes)].ID, At: r.StartedAt, Text: fmt.Sprintf("step %d of %s: %s", j, r.ID, strings.Repeat("x", 80))}
		}
		if err := s.AppendLog(ctx, r.ID, lines); err != nil {
			b.Fatal(err)
		}
		if err := s.RecordRelease(ctx, &pipeline.Release{Version: r.Version, Pipeline: "p", RunID: r.ID, Commits: r.Commits, Images: r.Images, CreatedAt: r.StartedAt}); err != nil {
			b.Fatal(err)
		}
		for _, env := range []string{"dev", "staging", "prod"} {
			if err := s.RecordDeployment(ctx, &pipeline.Deployment{Environment: env, Version: r.Version, RunID: r.ID, Kind: "run", Images: r.Images, At: r.StartedAt}); err != nil {
				b.Fatal(err)
			}
		}
	}
	s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	mb := float64(fi.Size()) / (1 << 20)

	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			s, err := store.OpenSQLite(ctx, path)
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/open")
		b.ReportMetric(mb, "MB")
	})
	b.Run("quick_check", func(b *testing.B) {
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		for b.Loop() {
			var res string
			if err := db.QueryRow(`PRAGMA quick_check`).Scan(&res); err != nil || res != "ok" {
				b.Fatalf("quick_check: %q, %v", res, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/check")
		b.ReportMetric(mb, "MB")
	})
}

// bigRun is a run shaped like the example pipeline's: three services built
// and pushed, three environments, tags and notes.
func bigRun(id string, started time.Time) *pipeline.Run {
	r := &pipeline.Run{
		ID: id, Kind: "run", Pipeline: "p", Version: "1." + strings.TrimPrefix(id, "run-") + ".0", Status: pipeline.Succeeded, PlanHash: "abc",
		Commits: map[string]string{}, Images: map[string]string{}, Params: map[string]string{"bump": "minor"},
		StartedAt: started.UTC(),
	}
	add := func(id, stage string, outputs stages.Outputs) {
		now := started.UTC()
		r.Nodes = append(r.Nodes, &pipeline.Node{ID: id, Stage: stage, Needs: []string{}, Status: pipeline.Succeeded, Attempts: 1, Outputs: outputs, StartedAt: &now, FinishedAt: &now})
	}
	for _, svc := range []string{"auth", "api", "web"} {
		r.Commits[svc] = strings.Repeat("c", 40)
		r.Images[svc] = "127.0.0.1:5000/sweepboard/" + svc + "@sha256:" + strings.Repeat("d", 64)
		add("build["+svc+"]", "build", stages.Outputs{"image": r.Images[svc]})
		add("push["+svc+"]", "push", stages.Outputs{"image": r.Images[svc]})
	}
	for _, n := range []string{"deploy-dev", "promote-staging", "approve-prod", "tag", "release-prod", "notes", "smoke", "announce"} {
		add(n, n, stages.Outputs{"auth": "pushed", "api": "pushed", "web": "pushed"})
	}
	return r
}
