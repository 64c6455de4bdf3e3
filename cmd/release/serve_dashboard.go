package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

//go:embed dashboard/page.html.tmpl dashboard/style.css
var dashboardFS embed.FS

var (
	dashboardCSS  = template.CSS(mustRead("dashboard/style.css"))
	dashboardTmpl = template.Must(template.New("dashboard").Funcs(template.FuncMap{
		"fmtTime":     dashTime,
		"shortDigest": shortDigest,
		"healthClass": healthClass,
	}).Parse(mustRead("dashboard/page.html.tmpl")))
)

func mustRead(name string) string {
	b, err := dashboardFS.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

const (
	// dashLogLines is how many lines of a run's output one page shows: the
	// last ones, unless the page asks for others.
	dashLogLines = 500
	// dashRuns is how many runs one page of the runs list shows.
	dashRuns = 25
	// dashHistory is how many deployments of each environment are shown.
	dashHistory = 5
	// dashWaitingMax bounds the waiting runs shown in full; the rest are
	// counted, and listed by the runs filter.
	dashWaitingMax = 100
)

type dashData struct {
	Pipeline      string
	Now           time.Time
	Nonce         string
	CSS           template.CSS
	RefreshMillis int
	// ReadOnly: the server has no token, so it approves nothing.
	ReadOnly     bool
	Err          string
	Waiting      []dashWaiting
	WaitingMore  int
	WaitingLink  string
	Environments []dashEnv
	Schedules    []scheduleView
	Filters      []dashFilter
	Filtered     bool
	Runs         []dashRunRow
	Newer, Older string // links to the next pages of runs, "" at an end
	Selected     string
	Run          *dashRun
}

// dashWaiting is a run in the "waiting for you" panel, with its nodes
// that wait.
type dashWaiting struct {
	ID, Kind, Version, Environment string
	StartedAt                      time.Time
	Gates                          []dashGate
}

// dashGate is a node that waits: for an approval, or for a freeze window
// to end (Frozen says which and until when).
type dashGate struct {
	Node, Environment string
	Since             *time.Time
	Frozen            string
	Approval          *stages.Approval
}

type dashEnv struct {
	serveEnvView
	// Code is what a branch deployment runs, a row per repo; none for a
	// release.
	Code    []dashRepo
	History []dashDeployment
}

// dashRepo is one repo of a branch deployment: the ref it was given, ""
// for a repo it kept at what ran before, and the commit.
type dashRepo struct {
	Repo, Ref, Commit string
}

// Short is the commit's first 12 hex digits.
func (r dashRepo) Short() string { return r.Commit[:min(12, len(r.Commit))] }

// codeOf is a row per repo of what a branch deployment runs: every repo
// it has a ref or a commit of, sorted.
func codeOf(refs, commits map[string]string) []dashRepo {
	if len(refs) == 0 {
		return nil
	}
	repos := maps.Clone(commits)
	if repos == nil {
		repos = map[string]string{}
	}
	for repo := range refs {
		repos[repo] = commits[repo]
	}
	var out []dashRepo
	for _, repo := range sortedKeys(repos) {
		out = append(out, dashRepo{Repo: repo, Ref: refs[repo], Commit: commits[repo]})
	}
	return out
}

type dashDeployment struct {
	Version, Kind, RunID string
	At                   time.Time
	Branch               string // what a branch deployment built; "" for a release
}

// dashFilter is one row of the runs list's filters: the choices, each a
// link that sets it.
type dashFilter struct {
	Name    string
	Choices []dashChoice
}

type dashChoice struct {
	Label, Link string
	On          bool
}

type dashRunRow struct {
	serveRunSummary
	Took string
}

type dashRun struct {
	serveRunView
	Graph dagLayout
	Nodes []dashNode
	Logs  []pipeline.LogLine
	// Where the shown lines sit in the log, and links to the pages around
	// them ("" when there is none).
	LogsTail                           bool
	LogsEarlier, LogsLater, LogsLatest string
}

// dashNode is a row of the selected run's node list.
type dashNode struct {
	ID, Status, Error string
	Attempts          int
	StartedAt         *time.Time
	Took              string
	Approval          *stages.Approval
}

// dashboard serves the page, or with ?partial=1 the part of it the page's
// script swaps in every few seconds. ?run=ID selects the run shown;
// status, environment, kind, before and after filter and page the runs
// list; logbefore and logafter page the selected run's log.
func (s *server) dashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	now := time.Now().UTC()
	d := dashData{Pipeline: s.p.Spec.Name, Now: now, CSS: dashboardCSS, RefreshMillis: 3000, Schedules: s.schedules(), ReadOnly: s.token == ""}
	var errs []string
	fail := func(err error) { errs = append(errs, err.Error()) }

	d.Waiting, d.WaitingMore, errs = s.dashWaiting(ctx)
	if d.WaitingMore > 0 {
		d.WaitingLink = dashLink(url.Values{}, "status", string(pipeline.Waiting))
	}
	var err error
	if d.Environments, err = s.dashEnvironments(ctx); err != nil {
		fail(err)
	}

	f, err := runFilterOf(q)
	if err != nil {
		fail(err)
		f = pipeline.RunFilter{}
	}
	d.Filtered = len(f.Status) > 0 || f.Environment != "" || f.Kind != ""
	d.Filters = s.dashFilters(q)
	runs, newer, older, err := s.runsPage(ctx, f, dashRuns)
	if err != nil {
		fail(err)
	}
	if newer {
		d.Newer = dashLink(q, "after", runs[0].ID, "before", "", "logbefore", "", "logafter", "")
	}
	if older {
		d.Older = dashLink(q, "before", runs[len(runs)-1].ID, "after", "", "logbefore", "", "logafter", "")
	}
	for _, x := range runs {
		d.Runs = append(d.Runs, dashRunRow{serveRunSummary: runSummaryOf(x), Took: took(&x.StartedAt, x.FinishedAt, x.Status, now)})
	}

	sel := q.Get("run")
	if sel == "" {
		// The newest run that has a graph: a skipped fire has none.
		for _, x := range runs {
			if x.Status != pipeline.Skipped {
				sel = x.ID
				break
			}
		}
	}
	if sel != "" {
		if run, err := s.st.Run(ctx, sel); err != nil {
			fail(err)
		} else {
			d.Selected = run.ID
			dr, err := s.dashRunOf(ctx, run, q, now)
			if err != nil {
				fail(err)
			}
			d.Run = dr
		}
	}
	d.Err = strings.Join(errs, "\n")

	name := "page"
	if q.Get("partial") != "" {
		name = "live"
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	d.Nonce = base64.StdEncoding.EncodeToString(nonce[:])
	var b bytes.Buffer
	if err := dashboardTmpl.ExecuteTemplate(&b, name, d); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", fmt.Sprintf("default-src 'none'; script-src 'nonce-%s'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'", d.Nonce))
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(b.Bytes())
}

// dashWaiting is every run that waits, newest first, with the nodes that
// wait: the first dashWaitingMax of them, and how many more there are.
func (s *server) dashWaiting(ctx context.Context) ([]dashWaiting, int, []string) {
	runs, err := s.st.Runs(ctx, pipeline.RunFilter{Status: []pipeline.Status{pipeline.Waiting}})
	if err != nil {
		return nil, 0, []string{err.Error()}
	}
	more := max(len(runs)-dashWaitingMax, 0)
	runs = runs[:len(runs)-more]
	var out []dashWaiting
	var errs []string
	for _, x := range runs {
		run, err := s.st.Run(ctx, x.ID)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out = append(out, waitingOf(run))
	}
	return out, more, errs
}

// dashEnvironments is each environment as GET /api/environments has it
// (the instances of templates after the file's), with what a branch
// deployment runs and its last deployments.
func (s *server) dashEnvironments(ctx context.Context) ([]dashEnv, error) {
	envs, err := s.environments(ctx)
	if err != nil {
		return nil, err
	}
	var out []dashEnv
	for _, e := range envs.Environments {
		de := dashEnv{serveEnvView: e, Code: codeOf(e.Refs, e.Commits)}
		hist, err := s.st.Deployments(ctx, e.Name, dashHistory)
		if err != nil {
			return out, err
		}
		for _, h := range hist {
			if e.CreatedAt != nil && h.At.Before(*e.CreatedAt) {
				break // an earlier instance of the name, removed
			}
			de.History = append(de.History, dashDeployment{Version: h.Version, Kind: h.Kind, RunID: h.RunID, At: h.At, Branch: branchLabel(h.Refs, h.Commits)})
		}
		out = append(out, de)
	}
	return out, nil
}

// frozenPrefix starts the error of a node that waits for a freeze window
// to end rather than for an approval (pipeline.Executor's frozen).
const frozenPrefix = "frozen: "

// waitingOf is a waiting run's entry in the panel: each node that waits,
// and what for.
func waitingOf(run *pipeline.Run) dashWaiting {
	w := dashWaiting{ID: run.ID, Kind: run.Kind, Version: run.Version, Environment: run.Environment, StartedAt: run.StartedAt}
	for _, n := range run.Nodes {
		if n.Status != pipeline.Waiting {
			continue
		}
		g := dashGate{Node: n.ID, Environment: n.Environment, Since: n.StartedAt, Approval: n.Approval}
		if reason, ok := strings.CutPrefix(n.Error, frozenPrefix); ok {
			// The command line's advice (--force --reason) is the page's
			// reason field.
			reason, _, _ = strings.Cut(reason, "; resume after it")
			g.Frozen = reason
		}
		w.Gates = append(w.Gates, g)
	}
	return w
}

// runsPage is one page of the runs f selects, newest first, and whether
// there are newer and older ones beyond it. A page of newer runs that
// reaches the newest is the first page.
func (s *server) runsPage(ctx context.Context, f pipeline.RunFilter, limit int) (runs []*pipeline.Run, newer, older bool, err error) {
	f.Limit = limit + 1
	runs, err = s.st.Runs(ctx, f)
	if err != nil {
		return nil, false, false, err
	}
	switch {
	case f.After != "" && len(runs) <= limit:
		f.After = ""
		return s.runsPage(ctx, f, limit)
	case f.After != "":
		return runs[1:], true, true, nil
	}
	older = len(runs) > limit
	if older {
		runs = runs[:limit]
	}
	return runs, f.Before != "", older, nil
}

// dashFilters are the choices of the runs list's filters, as links that
// keep the rest of the page's query and start the list over.
func (s *server) dashFilters(q url.Values) []dashFilter {
	statuses := []string{"running", "waiting", "failed", "succeeded", "cancelled", "interrupted", "fenced", "skipped"}
	kinds := []string{"run", "promote", "rollback", "tag"}
	var out []dashFilter
	for _, f := range []struct {
		name, key string
		values    []string
	}{
		{"status", "status", statuses},
		{"environment", "environment", s.p.Spec.EnvironmentOrder()},
		{"kind", "kind", kinds},
	} {
		df := dashFilter{Name: f.name}
		cur := q.Get(f.key)
		for _, v := range append([]string{""}, f.values...) {
			label := v
			if v == "" {
				label = "all"
			}
			df.Choices = append(df.Choices, dashChoice{Label: label, On: v == cur, Link: dashLink(q, f.key, v, "before", "", "after", "")})
		}
		out = append(out, df)
	}
	return out
}

// dashLink is the page's query with the keys in kv set to their values; an
// empty value takes the key out.
func dashLink(q url.Values, kv ...string) string {
	v := url.Values{}
	for k, vs := range q {
		if k != "partial" {
			v[k] = vs
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			v.Del(kv[i])
		} else {
			v.Set(kv[i], kv[i+1])
		}
	}
	if len(v) == 0 {
		return "./"
	}
	return "?" + v.Encode()
}

// dashRunOf is the selected run: its graph, its nodes with how long each
// took, and one page of its log: the last lines, or the page before
// logbefore or after logafter.
func (s *server) dashRunOf(ctx context.Context, run *pipeline.Run, q url.Values, now time.Time) (*dashRun, error) {
	dr := &dashRun{serveRunView: serveRunView{runView: newRunView(run), Schedule: run.Schedule, SkipReason: run.SkipReason}, Graph: layoutDAG(run, now)}
	for _, n := range run.Nodes {
		dr.Nodes = append(dr.Nodes, dashNode{ID: n.ID, Status: string(n.Status), Error: n.Error, Attempts: n.Attempts, StartedAt: n.StartedAt, Took: took(n.StartedAt, n.FinishedAt, n.Status, now), Approval: n.Approval})
	}
	keep := func(kv ...string) string {
		return dashLink(q, append([]string{"run", run.ID, "logbefore", "", "logafter", ""}, kv...)...)
	}
	before, _ := strconv.ParseInt(q.Get("logbefore"), 10, 64)
	after, _ := strconv.ParseInt(q.Get("logafter"), 10, 64)
	var (
		lines          []pipeline.LogLine
		earlier, later bool
		err            error
	)
	if after > 0 {
		lines, _, err = s.st.LogPage(ctx, run.ID, "", after, dashLogLines+1)
		later = len(lines) > dashLogLines
		if later {
			lines = lines[:dashLogLines]
		}
		earlier = true
	} else {
		lines, err = s.st.LogTail(ctx, run.ID, "", before, dashLogLines+1)
		earlier = len(lines) > dashLogLines
		if earlier {
			lines = lines[1:]
		}
		later = before > 0
		dr.LogsTail = before <= 0
	}
	if err != nil {
		return dr, err
	}
	dr.Logs = lines
	if len(lines) > 0 {
		if earlier {
			dr.LogsEarlier = keep("logbefore", strconv.FormatInt(lines[0].Seq, 10))
		}
		if later {
			dr.LogsLater = keep("logafter", strconv.FormatInt(lines[len(lines)-1].Seq, 10))
		}
	}
	if !dr.LogsTail {
		dr.LogsLatest = keep()
	}
	return dr, nil
}

// took is how long something ran: from start to finish, or so far while
// it runs or waits; "" when it never started.
func took(start, finish *time.Time, st pipeline.Status, now time.Time) string {
	switch {
	case start == nil || start.IsZero():
		return ""
	case finish != nil:
		return shortDuration(finish.Sub(*start))
	case st == pipeline.Running || st == pipeline.Waiting || st == pipeline.Pending:
		return shortDuration(now.Sub(*start)) + " so far"
	}
	return ""
}

// shortDuration rounds a duration to what a person reads at a glance:
// 850ms, 12.3s, 4m05s, 2h07m.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	if r := d.Round(100 * time.Millisecond); r < time.Minute {
		return strconv.FormatFloat(r.Seconds(), 'f', 1, 64) + "s"
	}
	if d = d.Round(time.Second); d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func dashTime(v any) string {
	switch t := v.(type) {
	case time.Time:
		return fmtTime(&t)
	case *time.Time:
		return fmtTime(t)
	}
	return "-"
}

// shortDigest keeps the repository and the first hex digits of a digest.
func shortDigest(ref string) string {
	repo, digest, ok := strings.Cut(ref, "@sha256:")
	if !ok {
		return ref
	}
	if i := strings.LastIndexByte(repo, '/'); i >= 0 {
		repo = repo[i+1:]
	}
	if len(digest) > 12 {
		digest = digest[:12]
	}
	return repo + "@sha256:" + digest
}

func healthClass(h string) string {
	switch {
	case h == "healthy":
		return "health-ok"
	case h == "not inspected" || h == "":
		return "health-none"
	}
	return "health-bad"
}

// dagLayout places a run's nodes in columns by depth: a node sits one
// column right of the deepest node it needs; within a column, in graph
// order.
type dagLayout struct {
	Width, Height int
	Nodes         []dagNode
	Edges         []dagEdge
}

type dagNode struct {
	ID, Label, Status, Error string
	Took                     string // how long it ran, "" when it did not
	Attempts                 int
	X, Y, W, H               int
}

type dagEdge struct {
	From, To, Path, Class string
}

const (
	dagBoxW, dagBoxH = 156, 44
	dagColW, dagRowH = 190, 58
	dagPad           = 10
)

func layoutDAG(run *pipeline.Run, now time.Time) dagLayout {
	var l dagLayout
	if len(run.Nodes) == 0 {
		return l
	}
	depth := map[string]int{}
	at := map[string]*dagNode{}
	rows := map[int]int{}
	cols := 0
	// Nodes are recorded in graph order: every need comes first.
	for _, n := range run.Nodes {
		d := 0
		for _, need := range n.Needs {
			if nd, ok := depth[need]; ok && nd+1 > d {
				d = nd + 1
			}
		}
		depth[n.ID] = d
		label := n.ID
		if len([]rune(label)) > 22 {
			label = string([]rune(label)[:21]) + "…"
		}
		l.Nodes = append(l.Nodes, dagNode{
			ID: n.ID, Label: label, Status: string(n.Status), Error: firstLine(n.Error), Attempts: n.Attempts,
			X: dagPad + d*dagColW, Y: dagPad + rows[d]*dagRowH, W: dagBoxW, H: dagBoxH,
			Took: took(n.StartedAt, n.FinishedAt, n.Status, now),
		})
		rows[d]++
		cols = max(cols, d+1)
	}
	maxRows := 0
	for _, r := range rows {
		maxRows = max(maxRows, r)
	}
	for i := range l.Nodes {
		at[l.Nodes[i].ID] = &l.Nodes[i]
	}
	for _, n := range run.Nodes {
		to := at[n.ID]
		for _, need := range n.Needs {
			from, ok := at[need]
			if !ok {
				continue
			}
			x1, y1 := from.X+from.W, from.Y+from.H/2
			x2, y2 := to.X, to.Y+to.H/2
			class := ""
			if from.Status == string(pipeline.Succeeded) {
				class = "done"
			}
			l.Edges = append(l.Edges, dagEdge{
				From: need, To: n.ID, Class: class,
				Path: fmt.Sprintf("M%d %d C%d %d, %d %d, %d %d", x1, y1, x1+24, y1, x2-24, y2, x2, y2),
			})
		}
	}
	l.Width = 2*dagPad + (cols-1)*dagColW + dagBoxW
	l.Height = 2*dagPad + (maxRows-1)*dagRowH + dagBoxH
	return l
}
