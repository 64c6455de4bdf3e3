package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
)

// BenchmarkClaim measures, side by side on SQLite and PostgreSQL, what the
// ownership of a run costs: claiming it (AcquireLease of "run/ID" with a
// fresh owner token) and giving it back (ReleaseLease), as every run,
// resume and approve-and-resume does. new-run claims a run never claimed
// before (the lease row is created); resume claims one whose row exists,
// as a resume does. Beside ns/op it reports the median and the 99th
// percentile of one claim + release. The goal: a median under 5 ms.
func BenchmarkClaim(b *testing.B) {
	open := benchStores()
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
