package engine

import (
	"context"
	"time"

	"github.com/sweepboard/release/pipeline"
)

// LogsRequest asks for the output a run's nodes logged.
type LogsRequest struct {
	RunID string // a run id or a prefix that names one run
	// Stage is a node id like push[api], or a stage name for all of its
	// nodes; "" is every node.
	Stage string
	// Follow keeps reading the lines the run's nodes log until the run is
	// no longer running.
	Follow bool
	// Every is how often a follower asks the store for new lines; 0 is
	// DefaultFollowEvery.
	Every time.Duration
}

// DefaultFollowEvery is how often Logs asks the store for new lines when
// it follows a run.
const DefaultFollowEvery = 500 * time.Millisecond

// logPage is how many lines Logs reads from the store at once.
const logPage = 1000

// Logs hands the run's output to out, in order, a page at a time: what was
// logged so far, and with Follow every line logged after it until the run
// is neither pending nor running. It needs only the engine's Store, and it
// only reads: ending ctx ends the following (with ctx's error), never the
// run. It returns the run as last read.
func (e *Engine) Logs(ctx context.Context, req LogsRequest, out func(run *pipeline.Run, lines []pipeline.LogLine) error) (*pipeline.Run, error) {
	run, err := e.Store.Run(ctx, req.RunID)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	node := ""
	if req.Stage != "" {
		for _, n := range run.Nodes {
			if n.ID == req.Stage || n.Stage == req.Stage {
				keep[n.ID], node = true, n.ID
			}
		}
		if len(keep) == 0 {
			return run, usagef("run %s has no node or stage %q", run.ID, req.Stage)
		}
		if len(keep) > 1 {
			node = "" // the store filters one node; several are kept below
		}
	}
	every := req.Every
	if every <= 0 {
		every = DefaultFollowEvery
	}
	var after int64
	for {
		// The status is read before the lines: when it says the run
		// stopped, every line it logged is in the pages read after it.
		done := run.Status != pipeline.Pending && run.Status != pipeline.Running
		for {
			lines, next, err := e.Store.LogPage(ctx, run.ID, node, after, logPage)
			if err != nil {
				return run, err
			}
			after = next
			kept := lines[:0:0]
			for _, l := range lines {
				if len(keep) == 0 || keep[l.Node] {
					kept = append(kept, l)
				}
			}
			if len(kept) > 0 {
				if err := out(run, kept); err != nil {
					return run, err
				}
			}
			if len(lines) < logPage {
				break
			}
		}
		if !req.Follow || done {
			return run, nil
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return run, ctx.Err()
		case <-t.C:
		}
		r, err := e.Store.Run(ctx, run.ID)
		if err != nil {
			return run, err
		}
		run = r
	}
}
