package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

const twoEnvs = "name: h\nenvironments: {dev: {}, prod: {from: dev}}\nstages:\n  one: {uses: exec}\n"

// TestHistory: newest first, each entry with the images it changed from
// the one before it, also the oldest one --limit shows.
func TestHistory(t *testing.T) {
	st := openStore(t)
	e := newEngine(t, st, twoEnvs)
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	for i, d := range []pipeline.Deployment{
		{Version: "1.0.0", RunID: "r1", Kind: "run", Images: map[string]string{"api": "a1", "web": "w1"}},
		{Version: "1.1.0", RunID: "r2", Kind: "run", Images: map[string]string{"api": "a2", "web": "w1"}},
		{Version: "1.0.0", RunID: "r3", Kind: "rollback", Images: map[string]string{"api": "a1", "web": "w1"}},
		{Version: "1.2.0", RunID: "r4", Kind: "promote", Images: map[string]string{"api": "a1", "web": "w2", "auth": "x1"}},
	} {
		d.Environment, d.At = "prod", at.Add(time.Duration(i)*time.Minute)
		if err := st.RecordDeployment(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	changed := func(hist []engine.Deployment) []string {
		var out []string
		for _, d := range hist {
			line := d.RunID + ":"
			for _, c := range d.Changed {
				line += fmt.Sprintf(" %s %s→%s", c.Service, c.From, c.To)
			}
			out = append(out, line)
		}
		return out
	}
	tests := []struct {
		name  string
		env   string
		limit int
		want  []string
		err   string
	}{
		{name: "all", env: "prod", want: []string{"r4: auth →x1 web w1→w2", "r3: api a2→a1", "r2: api a1→a2", "r1: api →a1 web →w1"}},
		{name: "limit", env: "prod", limit: 2, want: []string{"r4: auth →x1 web w1→w2", "r3: api a2→a1"}},
		{name: "nothing deployed", env: "dev"},
		{name: "unknown environment", env: "qa", err: `unknown environment "qa" (known: dev, prod)`},
		{name: "negative limit", env: "prod", limit: -1, err: "--limit -1: want 0 (all) or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hist, err := e.History(ctx, tt.env, tt.limit)
			if tt.err != "" {
				var ue *engine.UsageError
				if !errors.As(err, &ue) || err.Error() != tt.err {
					t.Fatalf("err = %v, want the usage error %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, changed(hist)); diff != "" {
				t.Errorf("history (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLogsFollow: a follower gets every line a run logs while it runs, in
// order and once, and stops when the run is over; ending its context ends
// the following and nothing else.
func TestLogsFollow(t *testing.T) {
	st := openStore(t)
	e := newEngine(t, st, twoEnvs)
	ctx := context.Background()
	run := &pipeline.Run{ID: "r1", Kind: "run", Pipeline: "h", Status: pipeline.Running, StartedAt: time.Now(),
		Nodes: []*pipeline.Node{{ID: "one", Stage: "one", Status: pipeline.Running, Outputs: map[string]string{}}}}
	if err := st.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range 1500 { // more than a page
			_ = st.AppendLog(ctx, "r1", []pipeline.LogLine{{Node: "one", At: time.Now(), Text: fmt.Sprint(i)}})
			if i%500 == 0 {
				time.Sleep(30 * time.Millisecond)
			}
		}
		done := *run
		done.Status = pipeline.Succeeded
		_ = st.SaveRun(ctx, &done)
	}()
	var got []string
	last, err := e.Logs(ctx, engine.LogsRequest{RunID: "r1", Follow: true, Every: 10 * time.Millisecond}, func(_ *pipeline.Run, lines []pipeline.LogLine) error {
		for _, l := range lines {
			got = append(got, l.Text)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last.Status != pipeline.Succeeded {
		t.Errorf("stopped at status %s, want succeeded", last.Status)
	}
	if len(got) != 1500 {
		t.Fatalf("%d lines, want 1500", len(got))
	}
	for i, text := range got {
		if text != fmt.Sprint(i) {
			t.Fatalf("line %d is %q: out of order or twice", i, text)
		}
	}

	// A run that keeps running: the follower stops with its context.
	run.ID = "r2"
	if err := st.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = e.Logs(cctx, engine.LogsRequest{RunID: "r2", Follow: true, Every: 10 * time.Millisecond}, func(*pipeline.Run, []pipeline.LogLine) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's", err)
	}
	if r, _ := st.Run(ctx, "r2"); r.Status != pipeline.Running {
		t.Errorf("the run is %s after its follower stopped, want running", r.Status)
	}
}
