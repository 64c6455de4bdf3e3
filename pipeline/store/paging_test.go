package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
)

// TestRunFilter lists runs by status, environment and kind, and pages
// through them older and newer, on every store.
func TestRunFilter(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
			// r0 (oldest) … r5 (newest); r2 and r3 start in the same
			// second, so the id breaks the tie.
			runs := []struct {
				id, kind, env string
				status        pipeline.Status
				at            time.Duration
			}{
				{"r0", "run", "", pipeline.Succeeded, 0},
				{"r1", "promote", "staging", pipeline.Failed, time.Minute},
				{"r2", "run", "", pipeline.Waiting, 2 * time.Minute},
				{"r3", "rollback", "prod", pipeline.Succeeded, 2 * time.Minute},
				{"r4", "run", "", pipeline.Waiting, 3 * time.Minute},
				{"r5", "tag", "", pipeline.Succeeded, 4 * time.Minute},
			}
			for _, x := range runs {
				r := sampleRun(x.id, t0.Add(x.at))
				r.Kind, r.Environment, r.Status = x.kind, x.env, x.status
				if x.kind != "run" {
					r.Nodes = r.Nodes[:1] // no node in dev
				}
				if err := s.CreateRun(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			ids := func(f pipeline.RunFilter) []string {
				t.Helper()
				got, err := s.Runs(ctx, f)
				if err != nil {
					t.Fatalf("Runs(%+v): %v", f, err)
				}
				out := []string{}
				for _, r := range got {
					out = append(out, r.ID)
				}
				return out
			}
			for _, tt := range []struct {
				name string
				f    pipeline.RunFilter
				want []string
			}{
				{"all", pipeline.RunFilter{}, []string{"r5", "r4", "r3", "r2", "r1", "r0"}},
				{"limit", pipeline.RunFilter{Limit: 2}, []string{"r5", "r4"}},
				{"waiting", pipeline.RunFilter{Status: []pipeline.Status{pipeline.Waiting}}, []string{"r4", "r2"}},
				{"two statuses", pipeline.RunFilter{Status: []pipeline.Status{pipeline.Failed, pipeline.Waiting}}, []string{"r4", "r2", "r1"}},
				{"kind", pipeline.RunFilter{Kind: "run"}, []string{"r4", "r2", "r0"}},
				{"environment of the run", pipeline.RunFilter{Environment: "staging"}, []string{"r1"}},
				{"environment of a node", pipeline.RunFilter{Environment: "dev"}, []string{"r4", "r2", "r0"}},
				{"environment and status", pipeline.RunFilter{Environment: "dev", Status: []pipeline.Status{pipeline.Succeeded}}, []string{"r0"}},
				{"older", pipeline.RunFilter{Before: "r3", Limit: 2}, []string{"r2", "r1"}},
				{"older, same second", pipeline.RunFilter{Before: "r2"}, []string{"r1", "r0"}},
				{"newer, nearest first kept", pipeline.RunFilter{After: "r1", Limit: 2}, []string{"r3", "r2"}},
				{"newer, all", pipeline.RunFilter{After: "r2"}, []string{"r5", "r4", "r3"}},
				{"older and filtered", pipeline.RunFilter{Before: "r4", Kind: "run"}, []string{"r2", "r0"}},
				{"none older", pipeline.RunFilter{Before: "r0"}, []string{}},
			} {
				t.Run(tt.name, func(t *testing.T) {
					if diff := cmp.Diff(tt.want, ids(tt.f)); diff != "" {
						t.Errorf("(-want +got):\n%s", diff)
					}
				})
			}
			if _, err := s.Runs(ctx, pipeline.RunFilter{Before: "nope"}); !errors.Is(err, pipeline.ErrNotFound) {
				t.Errorf("a cursor of no run: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestLogPaging reads a run's log a page at a time, forwards from a cursor
// and backwards from the end, of the whole run and of one node, with the
// lines of another run in between.
func TestLogPaging(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			for _, id := range []string{"r1", "r2"} {
				if err := s.CreateRun(ctx, sampleRun(id, time.Now())); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 10 {
				for _, id := range []string{"r1", "r2"} {
					node := []string{"build[api]", "deploy"}[i%2]
					l := pipeline.LogLine{Node: node, At: time.Now(), Text: fmt.Sprintf("%s %d", id, i)}
					if err := s.AppendLog(ctx, id, []pipeline.LogLine{l}); err != nil {
						t.Fatal(err)
					}
				}
			}
			texts := func(lines []pipeline.LogLine) []string {
				out := []string{}
				for _, l := range lines {
					out = append(out, l.Text)
				}
				return out
			}
			all, err := s.Logs(ctx, "r1", "")
			if err != nil || len(all) != 10 {
				t.Fatalf("Logs: %d lines, %v", len(all), err)
			}
			for i := 1; i < len(all); i++ {
				if all[i].Seq <= all[i-1].Seq {
					t.Fatalf("seq %d after %d: want it to grow", all[i].Seq, all[i-1].Seq)
				}
			}

			// Forwards, four at a time, to the end and past it.
			var got []string
			after := int64(0)
			for range 5 {
				page, next, err := s.LogPage(ctx, "r1", "", after, 4)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > 4 {
					t.Fatalf("page of %d lines, limit 4", len(page))
				}
				if len(page) == 0 && next != after {
					t.Errorf("an empty page moved the cursor from %d to %d", after, next)
				}
				got = append(got, texts(page)...)
				after = next
			}
			if diff := cmp.Diff(texts(all), got); diff != "" {
				t.Errorf("paged forwards (-want +got):\n%s", diff)
			}
			// One node's lines.
			page, _, err := s.LogPage(ctx, "r1", "deploy", all[2].Seq, 2)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"r1 3", "r1 5"}, texts(page)); diff != "" {
				t.Errorf("one node's page (-want +got):\n%s", diff)
			}

			// Backwards from the end.
			tail, err := s.LogTail(ctx, "r1", "", 0, 3)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"r1 7", "r1 8", "r1 9"}, texts(tail)); diff != "" {
				t.Errorf("tail (-want +got):\n%s", diff)
			}
			tail, err = s.LogTail(ctx, "r1", "", tail[0].Seq, 3)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"r1 4", "r1 5", "r1 6"}, texts(tail)); diff != "" {
				t.Errorf("the page before the tail (-want +got):\n%s", diff)
			}
			tail, err = s.LogTail(ctx, "r1", "build[api]", all[1].Seq, 10)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"r1 0"}, texts(tail)); diff != "" {
				t.Errorf("one node's lines before the second (-want +got):\n%s", diff)
			}
		})
	}
}
