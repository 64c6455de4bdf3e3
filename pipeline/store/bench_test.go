package store_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// BenchmarkStores measures, side by side on SQLite and PostgreSQL, the
// durable status changes per second (one node's status committed per
// transaction, as the executor does when nodes finish one at a time) and
// the median time to acquire a free lease.
func BenchmarkStores(b *testing.B) {
	stores := map[string]func(b *testing.B) pipeline.Store{
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
