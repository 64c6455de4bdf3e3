package main

import (
	"fmt"
	"io"
	"slices"
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

// fetchEvery is how often a fetch that is still on the way says so.
const fetchEvery = time.Second

// fetchWatch says, every fetchEvery while a new run fetches its repos,
// which repos are still on the way: a fetch of large repos takes seconds,
// and a silent command looks hung.
type fetchWatch struct {
	w     io.Writer
	mu    *sync.Mutex // the progress's: lines do not interleave
	every time.Duration
	now   func() time.Time

	start   time.Time
	left    []string // repos not fetched yet, in file order
	total   int
	stop    chan struct{}
	stopped bool
}

// fetching starts the watch over repos.
func (p *progress) fetching(repos []string) *fetchWatch {
	fw := &fetchWatch{w: p.w, mu: &p.mu, every: fetchEvery, now: time.Now}
	fw.begin(repos)
	return fw
}

func (fw *fetchWatch) begin(repos []string) {
	fw.start, fw.left, fw.total, fw.stop = fw.now(), append([]string(nil), repos...), len(repos), make(chan struct{})
	go func() {
		t := time.NewTicker(fw.every)
		defer t.Stop()
		for {
			select {
			case <-fw.stop:
				return
			case <-t.C:
				fw.tick()
			}
		}
	}()
}

// fetched marks a repo fetched; the watch ends with the last one.
func (fw *fetchWatch) fetched(repo string) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if i := slices.Index(fw.left, repo); i >= 0 {
		fw.left = slices.Delete(fw.left, i, i+1)
	}
	if len(fw.left) == 0 {
		fw.end()
	}
}

// done ends the watch, fetched or not (a fetch that failed).
func (fw *fetchWatch) done() {
	if fw == nil {
		return
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.end()
}

func (fw *fetchWatch) end() {
	if !fw.stopped {
		fw.stopped = true
		close(fw.stop)
	}
}

func (fw *fetchWatch) tick() {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.stopped {
		return
	}
	fmt.Fprintln(fw.w, fw.line())
}

// line is "15:04:05 fetching 3 of 8 repos, 2.0s: api, web, auth".
func (fw *fetchWatch) line() string {
	const named = 4
	now := fw.now()
	names := strings.Join(fw.left[:min(named, len(fw.left))], ", ")
	if len(fw.left) > named {
		names += fmt.Sprintf(" and %d more", len(fw.left)-named)
	}
	return fmt.Sprintf("%s fetching %d of %d repos, %.1fs: %s", now.UTC().Format("15:04:05"), len(fw.left), fw.total, now.Sub(fw.start).Seconds(), names)
}
