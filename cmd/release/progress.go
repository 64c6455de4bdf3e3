package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sweepboard/release/pipeline"
)

// progress prints node status changes to stderr: one line per change when
// piped (CI logs), a live block redrawn in place on a terminal.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	live   bool
	color  bool
	order  []string
	status map[string]pipeline.Status
	errs   map[string]string
	drawn  int // lines of the live block on screen
	last   time.Time
}

func newProgress(w io.Writer, live, color bool) *progress {
	return &progress{w: w, live: live, color: color, status: map[string]pipeline.Status{}, errs: map[string]string{}}
}

// start learns the nodes of the run, once it is owned and recorded.
func (p *progress) start(run *pipeline.Run) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range run.Nodes {
		p.order = append(p.order, n.ID)
		p.status[n.ID] = n.Status
	}
}

var statusMark = map[pipeline.Status]string{
	pipeline.Pending: "·", pipeline.Running: "›", pipeline.Waiting: "?",
	pipeline.Succeeded: "✓", pipeline.Failed: "✗", pipeline.Skipped: "-", pipeline.Cancelled: "!",
	pipeline.Interrupted: "!", pipeline.Fenced: "!",
}

var statusColor = map[pipeline.Status]string{
	pipeline.Running: "\x1b[36m", pipeline.Waiting: "\x1b[33m", pipeline.Succeeded: "\x1b[32m",
	pipeline.Failed: "\x1b[31m", pipeline.Skipped: "\x1b[90m", pipeline.Cancelled: "\x1b[33m",
	pipeline.Interrupted: "\x1b[33m", pipeline.Fenced: "\x1b[31m",
}

func (p *progress) paint(s pipeline.Status, text string) string {
	if !p.color || statusColor[s] == "" {
		return text
	}
	return statusColor[s] + text + "\x1b[0m"
}

func (p *progress) event(e pipeline.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status[e.Node] = e.Status
	p.errs[e.Node] = e.Err
	if !p.live {
		line := fmt.Sprintf("%s %s %s", e.At.UTC().Format("15:04:05"), e.Node, p.paint(e.Status, string(e.Status)))
		if e.Attempt > 1 && e.Status == pipeline.Running {
			line += fmt.Sprintf(" (attempt %d)", e.Attempt)
		}
		if e.Err != "" {
			line += ": " + e.Err
		}
		fmt.Fprintln(p.w, line)
		return
	}
	if time.Since(p.last) > 50*time.Millisecond || e.Status.Done() {
		p.redraw()
	}
}

func (p *progress) log(l pipeline.LogLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s | %s\n", l.Node, l.Text)
}

// maxLive bounds the live block: the nodes that are not pending or done
// come first, then a count of the rest.
const maxLive = 20

func (p *progress) redraw() {
	p.last = time.Now()
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	counts := map[pipeline.Status]int{}
	lines := 0
	for _, id := range p.order {
		s := p.status[id]
		counts[s]++
		if lines >= maxLive || s == pipeline.Pending || (s == pipeline.Succeeded && len(p.order) > maxLive) {
			continue
		}
		line := fmt.Sprintf("  %s %-28s %s", p.paint(s, statusMark[s]), id, p.paint(s, string(s)))
		if e := p.errs[id]; e != "" {
			line += ": " + firstLine(e)
		}
		b.WriteString("\x1b[2K" + line + "\n")
		lines++
	}
	var parts []string
	for _, s := range []pipeline.Status{pipeline.Succeeded, pipeline.Running, pipeline.Waiting, pipeline.Pending, pipeline.Failed, pipeline.Skipped, pipeline.Cancelled} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	b.WriteString("\x1b[2K  " + strings.Join(parts, ", ") + "\n")
	lines++
	for i := lines; i < p.drawn; i++ {
		b.WriteString("\x1b[2K\n")
		lines++
	}
	p.drawn = lines
	fmt.Fprint(p.w, b.String())
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		p.redraw()
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
