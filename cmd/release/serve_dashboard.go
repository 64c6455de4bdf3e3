package main

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
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

// dashLogLines is how many lines of a run's output the page shows.
const dashLogLines = 300

type dashData struct {
	Pipeline      string
	Now           time.Time
	Nonce         string
	CSS           template.CSS
	RefreshMillis int
	Err           string
	Environments  []serveEnvView
	Schedules     []scheduleView
	Runs          []serveRunSummary
	Selected      string
	Run           *dashRun
}

type dashRun struct {
	serveRunView
	Graph   dagLayout
	Logs    []pipeline.LogLine
	LogsCut bool
}

// dashboard serves the page, or with ?partial=1 the part of it the page's
// script swaps in every few seconds. ?run=ID selects the run shown.
func (s *server) dashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := dashData{Pipeline: s.p.Spec.Name, Now: time.Now().UTC(), CSS: dashboardCSS, RefreshMillis: 3000, Schedules: s.schedules()}
	var errs []string
	if envs, err := s.environments(ctx); err != nil {
		errs = append(errs, err.Error())
	} else {
		d.Environments = envs.Environments
	}
	runs, err := s.st.Runs(ctx, pipeline.RunFilter{Limit: 25})
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, x := range runs {
		d.Runs = append(d.Runs, serveRunSummary{
			runSummary: runSummary{ID: x.ID, Kind: x.Kind, Status: string(x.Status), Version: x.Version, Environment: x.Environment, StartedAt: x.StartedAt, FinishedAt: x.FinishedAt},
			Schedule:   x.Schedule, SkipReason: x.SkipReason,
		})
	}
	sel := r.URL.Query().Get("run")
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
			errs = append(errs, err.Error())
		} else {
			d.Selected = run.ID
			dr := &dashRun{serveRunView: serveRunView{runView: newRunView(run), Schedule: run.Schedule, SkipReason: run.SkipReason}, Graph: layoutDAG(run)}
			if lines, err := s.st.Logs(ctx, run.ID, ""); err != nil {
				errs = append(errs, err.Error())
			} else {
				if len(lines) > dashLogLines {
					lines, dr.LogsCut = lines[len(lines)-dashLogLines:], true
				}
				dr.Logs = lines
			}
			d.Run = dr
		}
	}
	d.Err = strings.Join(errs, "\n")

	name := "page"
	if r.URL.Query().Get("partial") != "" {
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

func layoutDAG(run *pipeline.Run) dagLayout {
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
