package pipeline

import (
	"bytes"
	"context"
	"sync"
	"time"
)

// maxLine bounds one stored log line; longer output is split.
const maxLine = 8 << 10

// logWriter stores a node's output in the run log, a line at a time. Writes
// may come from several goroutines (a command's stdout and stderr).
type logWriter struct {
	store Store
	runID string
	node  string
	tee   func(LogLine)
	now   func() time.Time
	// timeout bounds each store write: a store that does not answer must
	// not hold the node (its command's output, then its exit) for ever.
	timeout time.Duration
	// base, when set, is the context each write derives from: the
	// executor's, which ends a short grace after a signal, so that the
	// last lines of an interrupted node do not hold up the exit.
	base context.Context

	mu      sync.Mutex
	partial []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	var lines []LogLine
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			if len(w.partial) < maxLine {
				break
			}
			i = maxLine
		}
		lines = append(lines, LogLine{Node: w.node, At: w.now().UTC(), Text: string(w.partial[:i])})
		if i < len(w.partial) && w.partial[i] == '\n' {
			i++
		}
		w.partial = w.partial[i:]
	}
	w.emit(lines)
	return len(p), nil
}

// Flush stores a last line that had no newline.
func (w *logWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit([]LogLine{{Node: w.node, At: w.now().UTC(), Text: string(w.partial)}})
		w.partial = nil
	}
}

func (w *logWriter) emit(lines []LogLine) {
	if len(lines) == 0 {
		return
	}
	// A log line that cannot be stored must not fail the stage: the
	// status changes are what resume depends on.
	base := w.base
	if base == nil {
		base = context.Background()
	}
	ctx, cancel := context.WithTimeout(base, w.timeout)
	_ = w.store.AppendLog(ctx, w.runID, lines)
	cancel()
	if w.tee != nil {
		for _, l := range lines {
			w.tee(l)
		}
	}
}
