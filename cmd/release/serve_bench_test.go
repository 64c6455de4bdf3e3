package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/builtin"
)

// benchLogLines is the size of the log of the run the dashboard
// benchmark selects: a long build's output.
const benchLogLines = 200_000

// BenchmarkDashboard renders the dashboard of a SQLite store holding a
// run waiting at the prod gate with 200,000 log lines and 200 finished
// runs after it: the page with no run chosen (the newest run is shown),
// the page of the waiting run, and the refresh the page's script asks for
// every 3 s. Each reports ms/op and the size of the answer.
//
//	go test ./cmd/release -run '^$' -bench BenchmarkDashboard -benchtime 20x
func BenchmarkDashboard(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(apiPipeline), 0o644); err != nil {
		b.Fatal(err)
	}
	f := &Factory{
		IO:       &IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard},
		Registry: builtin.Registry,
		Getenv:   func(k string) string { return map[string]string{"RELEASE_SERVE_TOKEN": "bench"}[k] },
		File:     filepath.Join(dir, "pipeline.yaml"),
		Output:   "text",
	}
	defer f.Close()
	s, err := newServer(context.Background(), f, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	waiting := seedBenchStore(b, s.st)
	hs := httptest.NewServer(s.handler(context.Background()))
	defer hs.Close()

	for _, page := range []struct{ name, path string }{
		{"newest", "/"},
		{"waiting-run", "/?run=" + waiting},
		{"refresh", "/?partial=1&run=" + waiting},
	} {
		b.Run(page.name, func(b *testing.B) {
			size := 0
			for b.Loop() {
				resp, err := http.Get(hs.URL + page.path)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("GET %s: %s", page.path, resp.Status)
				}
				size = int(n)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
			b.ReportMetric(float64(size)/1024, "KiB/page")
		})
	}
}

// seedBenchStore records a run of the API pipeline waiting at the prod
// gate, with benchLogLines lines of build output, then 200 finished runs
// after it, and deployments of dev and staging. It returns the waiting
// run's id.
func seedBenchStore(b *testing.B, st pipeline.Store) string {
	b.Helper()
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-24 * time.Hour)
	node := func(id, env string, needs []string, status pipeline.Status, at time.Time) *pipeline.Node {
		done := at.Add(3 * time.Second)
		n := &pipeline.Node{ID: id, Stage: id, Environment: env, Needs: needs, Status: status, Attempts: 1, Outputs: stages.Outputs{}, StartedAt: &at, FinishedAt: &done}
		if status == pipeline.Waiting {
			n.FinishedAt = nil
		}
		if status == pipeline.Pending {
			n.Attempts, n.StartedAt, n.FinishedAt = 0, nil, nil
		}
		return n
	}
	run := &pipeline.Run{
		ID: pipeline.NewRunID(t0), Kind: "run", Pipeline: "shop", Version: "0.1.0", Status: pipeline.Waiting, PlanHash: "h",
		Params: map[string]string{}, StartedAt: t0,
		Nodes: []*pipeline.Node{
			node("build", "", []string{}, pipeline.Succeeded, t0),
			node("deploy-dev", "dev", []string{"build"}, pipeline.Succeeded, t0.Add(time.Minute)),
			node("deploy-staging", "staging", []string{"deploy-dev"}, pipeline.Succeeded, t0.Add(2*time.Minute)),
			node("approve-prod", "prod", []string{"deploy-staging"}, pipeline.Waiting, t0.Add(3*time.Minute)),
			node("deploy-prod", "prod", []string{"approve-prod"}, pipeline.Pending, t0),
		},
	}
	if err := st.CreateRun(ctx, run); err != nil {
		b.Fatal(err)
	}
	batch := make([]pipeline.LogLine, 0, 10_000)
	for i := range benchLogLines {
		batch = append(batch, pipeline.LogLine{Node: "build", At: t0, Text: fmt.Sprintf("#%d [build 4/7] RUN go build ./... step %d of a long build, with a line as long as a compiler's", i%40, i)})
		if len(batch) == cap(batch) || i == benchLogLines-1 {
			if err := st.AppendLog(ctx, run.ID, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for i := range 200 {
		at := t0.Add(time.Duration(i+5) * time.Minute)
		done := at.Add(time.Minute)
		r := &pipeline.Run{
			ID: pipeline.NewRunID(at), Kind: "promote", Environment: "staging", Pipeline: "shop", Version: "0.1.0", Status: pipeline.Succeeded, PlanHash: "h",
			Params: map[string]string{}, StartedAt: at, FinishedAt: &done,
			Nodes: []*pipeline.Node{node("deploy-staging", "staging", []string{}, pipeline.Succeeded, at)},
		}
		if err := st.CreateRun(ctx, r); err != nil {
			b.Fatal(err)
		}
		if err := st.AppendLog(ctx, r.ID, []pipeline.LogLine{{Node: "deploy-staging", At: at, Text: "deployed"}}); err != nil {
			b.Fatal(err)
		}
		d := &pipeline.Deployment{Environment: "staging", Version: "0.1.0", RunID: r.ID, Kind: "promote", Images: map[string]string{"api": apiDigest}, At: done}
		if err := st.RecordDeployment(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	return run.ID
}
