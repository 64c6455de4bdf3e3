package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// BenchmarkClaim measures, side by side on SQLite and PostgreSQL, what the
// ownership of a run costs: claiming it (AcquireLease of "run/ID" with a
// fresh owner token) and giving it back (ReleaseLease), as every run,
// resume and approve-and-resume does. new-run claims a run never claimed
// before (the lease row is created); resume claims one whose row exists,
// as a resume does. Beside ns/op it reports the median and the 99th
// percentile of one claim + release. The goal: a median under 5 ms.
func BenchmarkClaim(b *testing.B) {
	open := map[string]func(b *testing.B) pipeline.Store{
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
		for _, kind := range []string{"new-run", "resume"} {
			b.Run(name+"/"+kind, func(b *testing.B) {
				s := open[name](b)
				ctx := context.Background()
				var times []time.Duration
				i := 0
				for b.Loop() {
					id := "bench-resumed"
					if kind == "new-run" {
						id = fmt.Sprintf("bench-%06d", i)
						i++
					}
					holder := pipeline.NewOwner(id).Holder()
					start := time.Now()
					l, err := s.AcquireLease(ctx, pipeline.ClaimPrefix+id, holder, pipeline.DefaultLeaseTTL)
					if err != nil {
						b.Fatal(err)
					}
					if err := s.ReleaseLease(ctx, l); err != nil {
						b.Fatal(err)
					}
					times = append(times, time.Since(start))
				}
				slices.Sort(times)
				b.ReportMetric(millis(times[len(times)/2]), "median-ms")
				b.ReportMetric(millis(times[len(times)*99/100]), "p99-ms")
			})
		}
	}
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
