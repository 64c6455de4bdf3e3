package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// seedRuns records n finished runs of kind run, each a minute after the
// one before, starting a minute after from: runs newer than a waiting one.
func seedRuns(t testing.TB, st pipeline.Store, from time.Time, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		at := from.Add(time.Duration(i+1) * time.Minute).UTC()
		done := at.Add(90 * time.Second)
		r := &pipeline.Run{
			ID: fmt.Sprintf("%s-%06x", at.Format("20060102-150405"), i), Kind: "run", Pipeline: "shop", Version: fmt.Sprintf("0.%d.0", i+2),
			Status: pipeline.Succeeded, PlanHash: "h", Params: map[string]string{}, StartedAt: at, FinishedAt: &done,
			Nodes: []*pipeline.Node{{ID: "build", Stage: "build", Needs: []string{}, Status: pipeline.Succeeded, Attempts: 1, Outputs: stages.Outputs{}, StartedAt: &at, FinishedAt: &done}},
		}
		if i%3 == 1 {
			r.Kind, r.Environment, r.Status = "promote", "staging", pipeline.Failed
		}
		if err := st.CreateRun(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// section is the part of page from the element with id to the end of its
// section (or table).
func section(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `id="`+id+`"`)
	if i < 0 {
		t.Fatalf("the page has no #%s", id)
	}
	rest := page[i:]
	end := len(rest)
	for _, closer := range []string{"</section>", "</table>"} {
		if j := strings.Index(rest, closer); j >= 0 && j < end {
			end = j
		}
	}
	return rest[:end]
}

func getPage(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", url, resp.StatusCode, b)
	}
	return string(b)
}

// link is the href of the first <a> in html whose text is text.
func link(t *testing.T, html, text string) string {
	t.Helper()
	re := regexp.MustCompile(`<a [^>]*href="([^"]*)"[^>]*>` + regexp.QuoteMeta(text) + `</a>`)
	m := re.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no link %q in:\n%s", text, html)
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

// TestDashboardWaitingOnTop: a run waiting at the prod gate stays on top
// of the dashboard however many runs came after it, with an Approve
// button; the runs list is filtered and paged; each environment shows its
// last deployments; the nodes show how long they took.
func TestDashboardWaitingOnTop(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", map[string]string{"RELEASE_SERVE_TOKEN": "t0ken"})
	waiting := seedAPIStore(t, s)
	ctx := context.Background()
	w, err := s.st.Run(ctx, waiting)
	if err != nil {
		t.Fatal(err)
	}
	newer := seedRuns(t, s.st, w.StartedAt, 40)
	for i, v := range []string{"1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0"} {
		d := &pipeline.Deployment{Environment: "dev", Version: v, RunID: newer[i], Kind: "run", Images: map[string]string{"api": apiDigest}, At: time.Now()}
		if err := s.st.RecordDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(s.handler(ctx))
	defer hs.Close()

	page := getPage(t, hs.URL+"/")
	if strings.Index(page, `id="waiting"`) > strings.Index(page, `id="environments"`) {
		t.Error("the waiting panel is not the first thing on the page")
	}
	panel := section(t, page, "waiting")
	for _, want := range []string{
		`data-run="` + waiting + `"`,
		`<span class="mono">approve-prod</span> waits for approval to go on to <b>prod</b>`,
		`data-approve="` + waiting + `" data-stage="approve-prod">Approve</button>`,
	} {
		if !strings.Contains(panel, want) {
			t.Errorf("the waiting panel has no %s:\n%s", want, panel)
		}
	}
	if strings.Contains(page, "t0ken") {
		t.Error("the token reached the page")
	}
	runs := section(t, page, "runs")
	if got := strings.Count(runs, "<tr data-run="); got != dashRuns {
		t.Errorf("%d runs listed, want a page of %d", got, dashRuns)
	}
	if strings.Contains(runs, waiting) {
		t.Error("the waiting run is on the first page of runs: the test needs more newer runs")
	}

	// Older pages reach the waiting run; newer comes back.
	pager := section(t, page, "runs-pager")
	if strings.Contains(pager, "newer") {
		t.Errorf("the first page links to newer runs: %s", pager)
	}
	older := getPage(t, hs.URL+"/"+link(t, pager, "older →"))
	if runs := section(t, older, "runs"); !strings.Contains(runs, `data-run="`+waiting+`"`) || !strings.Contains(runs, `data-run="`+newer[0]+`"`) {
		t.Errorf("the second page has not the oldest runs:\n%s", runs)
	}
	if p := section(t, older, "runs-pager"); strings.Contains(p, "older") {
		t.Errorf("the last page links to older runs: %s", p)
	} else {
		back := getPage(t, hs.URL+"/"+link(t, p, "← newer"))
		if diff := cmp.Diff(section(t, page, "runs"), section(t, back, "runs")); diff != "" {
			t.Errorf("newer from the second page is not the first (-first +got):\n%s", diff)
		}
	}

	// Filters.
	filters := section(t, page, "filters")
	for _, tt := range []struct {
		choice string
		want   int
	}{{"failed", 13}, {"waiting", 1}} {
		got := getPage(t, hs.URL+"/"+link(t, filters, tt.choice))
		if n := strings.Count(section(t, got, "runs"), "<tr data-run="); n != tt.want {
			t.Errorf("status %s: %d runs listed, want %d", tt.choice, n, tt.want)
		}
		if !strings.Contains(section(t, got, "filters"), `class="chip on" href="?status=`+tt.choice+`"`) &&
			!regexp.MustCompile(`class="chip on" href="[^"]*">`+tt.choice+`<`).MatchString(got) {
			t.Errorf("status %s is not shown chosen", tt.choice)
		}
	}
	byEnv := getPage(t, hs.URL+"/?environment=staging&kind=promote")
	if n := strings.Count(section(t, byEnv, "runs"), "<tr data-run="); n != 13 {
		t.Errorf("promotions of staging: %d, want 13", n)
	}
	if got := getPage(t, hs.URL+"/?status=bogus"); !strings.Contains(got, `status &#34;bogus&#34;: want one of`) {
		t.Error("a wrong status is not reported on the page")
	}

	// History: the last five deployments of dev, newest first, each
	// linked to its run.
	hist := section(t, page, "history-dev")
	var versions []string
	for _, m := range regexp.MustCompile(`data-deployment="([^"]*)"`).FindAllStringSubmatch(hist, -1) {
		versions = append(versions, m[1])
	}
	if diff := cmp.Diff([]string{"1.6.0", "1.5.0", "1.4.0", "1.3.0", "1.2.0"}, versions); diff != "" {
		t.Errorf("dev's history (-want +got):\n%s", diff)
	}
	if !strings.Contains(hist, `href="?run=`+newer[5]+`"`) {
		t.Errorf("dev's last deployment does not link to its run:\n%s", hist)
	}

	// The selected run: durations on the graph and in the node list.
	sel := getPage(t, hs.URL+"/?run="+newer[0])
	if !strings.Contains(section(t, sel, "dag"), `succeeded · 1m30s`) {
		t.Errorf("the graph shows no duration:\n%s", section(t, sel, "dag"))
	}
	if !strings.Contains(section(t, sel, "nodes"), `<td class="took">1m30s</td>`) {
		t.Errorf("the node list shows no duration:\n%s", section(t, sel, "nodes"))
	}
	gate := getPage(t, hs.URL+"/?run="+waiting)
	if !regexp.MustCompile(`data-node="approve-prod">\s*<td class="mono">approve-prod</td>\s*<td><span class="badge waiting">waiting</span></td>\s*<td>1</td>\s*<td class="muted">[^<]+</td>\s*<td class="took">[0-9.ms]+ so far</td>`).MatchString(section(t, gate, "nodes")) {
		t.Errorf("the waiting gate shows no time so far:\n%s", section(t, gate, "nodes"))
	}
}

// TestDashboardFrozenAndReadOnly: a run waiting for a freeze window says
// so with the window, and asks for a reason to go through; a server
// without a token says it is read-only and asks for none.
func TestDashboardFrozenAndReadOnly(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	ctx := context.Background()
	r, err := s.st.Run(ctx, waiting)
	if err != nil {
		t.Fatal(err)
	}
	n := r.Node("approve-prod")
	n.Error = "frozen: prod is frozen by window holidays until 2999-01-01T00:00:00Z; resume after it, or with --force --reason TEXT"
	if err := s.st.SaveNodes(ctx, r.ID, n); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.handler(ctx))
	defer hs.Close()
	page := getPage(t, hs.URL+"/")
	panel := section(t, page, "waiting")
	for _, want := range []string{
		`waits for a freeze to end: prod is frozen by window holidays until 2999-01-01T00:00:00Z</span>`,
		`placeholder="why it goes through now"`,
		`data-frozen data-reason-field="reason-0-0">Approve through the freeze</button>`,
	} {
		if !strings.Contains(panel, want) {
			t.Errorf("the waiting panel has no %s:\n%s", want, panel)
		}
	}
	if !strings.Contains(page, `id="readonly"`) || strings.Contains(page, `id="tokenform"`) {
		t.Error("a server without a token shows a token field, or does not say it is read-only")
	}
}

// TestDashboardLogPages: the selected run shows the last lines of its
// log, with links to the pages before and after; no page reads the whole
// log.
func TestDashboardLogPages(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	ctx := context.Background()
	before, err := s.st.Logs(ctx, waiting, "")
	if err != nil {
		t.Fatal(err)
	}
	var lines []pipeline.LogLine
	for i := range 1200 {
		lines = append(lines, pipeline.LogLine{Node: "deploy-staging", At: time.Now(), Text: fmt.Sprintf("line %04d", i)})
	}
	if err := s.st.AppendLog(ctx, waiting, lines); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.handler(ctx))
	defer hs.Close()

	// shown is the first and last line of the page's log, and its count.
	shown := func(page string) (string, string, int) {
		t.Helper()
		m := regexp.MustCompile(`<span class="node">[^<]*</span> ([^\n]*)\n`).FindAllStringSubmatch(page, -1)
		if len(m) == 0 {
			t.Fatalf("no log lines on the page")
		}
		return m[0][1], m[len(m)-1][1], len(m)
	}
	page := getPage(t, hs.URL+"/?run="+waiting)
	first, last, n := shown(page)
	if first != "line 0700" || last != "line 1199" || n != dashLogLines {
		t.Errorf("the tail: %q … %q, %d lines; want line 0700 … line 1199, %d", first, last, n, dashLogLines)
	}
	pager := section(t, page, "logs-pager")
	if !strings.Contains(pager, "the last 500 lines") || strings.Contains(pager, "later") {
		t.Errorf("the tail's pager: %s", pager)
	}
	earlier := getPage(t, hs.URL+"/"+link(t, pager, "← earlier"))
	if first, last, _ := shown(earlier); first != "line 0200" || last != "line 0699" {
		t.Errorf("the page before the tail: %q … %q", first, last)
	}
	earliest := getPage(t, hs.URL+"/"+link(t, section(t, earlier, "logs-pager"), "← earlier"))
	first, last, n = shown(earliest)
	if first != before[0].Text || last != "line 0199" || n != 200+len(before) {
		t.Errorf("the first page: %q … %q, %d lines", first, last, n)
	}
	p := section(t, earliest, "logs-pager")
	if strings.Contains(p, "earlier") {
		t.Errorf("the first page links to earlier lines: %s", p)
	}
	later := getPage(t, hs.URL+"/"+link(t, p, "later →"))
	if first, last, _ := shown(later); first != "line 0200" || last != "line 0699" {
		t.Errorf("later from the first page: %q … %q", first, last)
	}
	if !strings.Contains(section(t, later, "logs-pager"), ">the latest</a>") {
		t.Error("an earlier page does not link to the latest lines")
	}
}

// TestServeLogPages pages through a run's log with GET
// /api/runs/{id}/logs: at most the limit per answer, capped, the cursor of
// the next page, and more while there is.
func TestServeLogPages(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	ctx := context.Background()
	var lines []pipeline.LogLine
	for i := range 2500 {
		lines = append(lines, pipeline.LogLine{Node: "deploy-staging", At: time.Now(), Text: fmt.Sprintf("line %d", i)})
	}
	if err := s.st.AppendLog(ctx, waiting, lines); err != nil {
		t.Fatal(err)
	}
	all, err := s.st.Logs(ctx, waiting, "")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.handler(ctx))
	defer hs.Close()
	c := apiClient{t: t, url: hs.URL}

	var got []string
	var sizes []int
	path := "/api/runs/" + waiting + "/logs"
	for after := int64(0); ; {
		var page logPageView
		c.getJSON(fmt.Sprintf("%s?after=%d", path, after), &page)
		sizes = append(sizes, len(page.Lines))
		for _, l := range page.Lines {
			got = append(got, l.Text)
		}
		if !page.More {
			if page.Next != all[len(all)-1].Seq {
				t.Errorf("the last page's next is %d, want the last line's seq %d", page.Next, all[len(all)-1].Seq)
			}
			break
		}
		after = page.Next
	}
	var want []string
	for _, l := range all {
		want = append(want, l.Text)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the log paged (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{logPageDefault, logPageDefault, len(all) - 2*logPageDefault}, sizes); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}

	var page logPageView
	c.getJSON(path+"?limit=3&stage=deploy-staging&after="+fmt.Sprint(all[len(all)-2].Seq), &page)
	if len(page.Lines) != 1 || page.Lines[0].Text != "line 2499" || page.More {
		t.Errorf("the page after the last but one: %+v", page)
	}
	c.getJSON(fmt.Sprintf("%s?after=%d", path, page.Next), &page)
	if len(page.Lines) != 0 || page.Next != all[len(all)-1].Seq || page.More {
		t.Errorf("the page after the end: %+v; want no lines and the same cursor", page)
	}
	for _, q := range []string{"?after=x", "?after=-1", "?limit=0", "?limit=many"} {
		if code, body := c.do("GET", path+q, "", ""); code != http.StatusBadRequest {
			t.Errorf("GET logs%s: %d %s, want 400", q, code, body)
		}
	}
	if code, _ := c.do("GET", "/api/runs/20991231/logs", "", ""); code != http.StatusNotFound {
		t.Errorf("logs of an unknown run: %d, want 404", code)
	}
}

// TestServeRunsFilter lists runs through GET /api/runs by status,
// environment and kind, and pages with before and after.
func TestServeRunsFilter(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), apiPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	w, err := s.st.Run(context.Background(), waiting)
	if err != nil {
		t.Fatal(err)
	}
	newer := seedRuns(t, s.st, w.StartedAt, 6)
	hs := httptest.NewServer(s.handler(context.Background()))
	defer hs.Close()
	c := apiClient{t: t, url: hs.URL}
	ids := func(q string) []string {
		t.Helper()
		var runs []serveRunSummary
		c.getJSON("/api/runs"+q, &runs)
		out := []string{}
		for _, r := range runs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tt := range []struct {
		q    string
		want []string
	}{
		{"?status=waiting", []string{waiting}},
		{"?status=waiting,failed", []string{newer[4], newer[1], waiting}},
		{"?kind=promote&environment=staging", []string{newer[4], newer[1]}},
		{"?environment=prod", []string{waiting}},
		{"?limit=2&before=" + newer[3], []string{newer[2], newer[1]}},
		{"?limit=2&after=" + newer[1], []string{newer[3], newer[2]}},
	} {
		if diff := cmp.Diff(tt.want, ids(tt.q)); diff != "" {
			t.Errorf("GET /api/runs%s (-want +got):\n%s", tt.q, diff)
		}
	}
	for _, tt := range []struct {
		q    string
		code int
	}{
		{"?status=done", http.StatusBadRequest},
		{"?before=a&after=b", http.StatusBadRequest},
		{"?before=20991231-000000-000000", http.StatusNotFound},
	} {
		if code, body := c.do("GET", "/api/runs"+tt.q, "", ""); code != tt.code {
			t.Errorf("GET /api/runs%s: %d %s, want %d", tt.q, code, body, tt.code)
		}
	}
}

// TestDashboardDurations: how long a node took, as the page shows it.
func TestDashboardDurations(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{850 * time.Millisecond, "850ms"},
		{12345 * time.Millisecond, "12.3s"},
		{4*time.Minute + 5*time.Second, "4m05s"},
		{59960 * time.Millisecond, "1m00s"},
		{59*time.Minute + 59*time.Second + 600*time.Millisecond, "1h00m"},
		{2*time.Hour + 7*time.Minute + 20*time.Second, "2h07m"},
	} {
		if got := shortDuration(tt.d); got != tt.want {
			t.Errorf("shortDuration(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
