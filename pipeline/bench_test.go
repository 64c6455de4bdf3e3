package pipeline_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

type nop struct{}

func (nop) Run(context.Context, *stages.Env) (stages.Outputs, error) { return nil, nil }

// timedStore measures every durable write the executor makes.
type timedStore struct {
	pipeline.Store
	mu     sync.Mutex
	writes []time.Duration
}

func (s *timedStore) SaveNodes(ctx context.Context, id string, ns ...*pipeline.Node) error {
	start := time.Now()
	err := s.Store.SaveNodes(ctx, id, ns...)
	s.took(time.Since(start))
	return err
}

func (s *timedStore) took(d time.Duration) {
	s.mu.Lock()
	s.writes = append(s.writes, d)
	s.mu.Unlock()
}

// Fenced times the writes of the fenced view too: the executor makes its
// record writes through one.
func (s *timedStore) Fenced(l *pipeline.Lease) pipeline.Store {
	return &timedFenced{Store: s.Store.Fenced(l), timed: s}
}

type timedFenced struct {
	pipeline.Store
	timed *timedStore
}

func (s *timedFenced) SaveNodes(ctx context.Context, id string, ns ...*pipeline.Node) error {
	start := time.Now()
	err := s.Store.SaveNodes(ctx, id, ns...)
	s.timed.took(time.Since(start))
	return err
}

// wideDAG is 1,000 stages: 10 layers of 100, each node needing two nodes of
// the layer before it.
func wideDAG(layers, width int) string {
	var b strings.Builder
	b.WriteString("name: bench\nstages:\n")
	for l := range layers {
		for w := range width {
			fmt.Fprintf(&b, "  n%02d-%03d: {uses: nop", l, w)
			if l > 0 {
				fmt.Fprintf(&b, ", needs: [n%02d-%03d, n%02d-%03d]", l-1, w, l-1, (w+1)%width)
			}
			b.WriteString("}\n")
		}
	}
	return b.String()
}

// BenchmarkExecutor1000 runs a 1,000-node DAG of no-op nodes through the
// real executor and the SQLite store (WAL, synchronous=FULL). It reports the
// engine time per run, the median and p99 durable write per status change,
// and the process's peak RSS.
func BenchmarkExecutor1000(b *testing.B) {
	reg := &stages.Registry{}
	reg.Register(stages.Kind{Name: "nop", New: func() stages.Stage { return nop{} }})
	p, err := pipeline.Parse("bench.yaml", filepath.Join(b.TempDir(), "bench.yaml"), []byte(wideDAG(10, 100)), reg)
	if err != nil {
		b.Fatal(err)
	}
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ts := &timedStore{Store: db}
	x := &pipeline.Executor{Store: ts, Parallel: 2}
	changes := 0
	b.ResetTimer()
	for range b.N {
		r := pipeline.NewRun("run", p, plan, time.Now())
		if err := ts.CreateRun(context.Background(), r); err != nil {
			b.Fatal(err)
		}
		if err := x.Execute(context.Background(), p, plan, r); err != nil {
			b.Fatal(err)
		}
		changes += 2 * len(r.Nodes) // running, succeeded
	}
	b.StopTimer()
	slices.Sort(ts.writes)
	b.ReportMetric(float64(len(plan.Nodes)), "nodes")
	b.ReportMetric(float64(ts.writes[len(ts.writes)/2].Microseconds())/1000, "median-write-ms")
	b.ReportMetric(float64(ts.writes[len(ts.writes)*99/100].Microseconds())/1000, "p99-write-ms")
	b.ReportMetric(float64(len(ts.writes))/float64(b.N), "writes/run")
	b.ReportMetric(float64(changes)/float64(b.N), "changes/run")
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak-rss-MB")
	}
}
