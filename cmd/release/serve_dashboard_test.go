package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
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

// branchPipeline is apiPipeline with a template of dev environments per
// branch.
var branchPipeline = strings.Replace(apiPipeline, "  prod: {from: staging, approval: required}\n",
	"  prod: {from: staging, approval: required}\n  dev-*: {from: dev, expire: 72h}\n", 1)

// The commits seedBranches records.
const (
	loginSHA = "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5"
	cartSHA  = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
	webSHA   = "0123456789abcdef0123456789abcdef01234567"
)

// seedBranches records, after release 1.0.0 in staging, a branch
// deployment of api=feature/login to staging, and the instance dev-login
// of dev-* deployed twice (api=feature/login, then web=feature/cart) with
// a listen address; an older deployment under its name, of an instance
// removed before, must not show.
func seedBranches(t testing.TB, st pipeline.Store, run string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	webDigest := strings.Replace(apiDigest, "api", "web", 1)
	for _, d := range []*pipeline.Deployment{
		{Environment: "staging", RunID: run, Kind: pipeline.KindDeploy, Images: map[string]string{"api": apiDigest}, At: now,
			Refs: map[string]string{"api": "feature/login"}, Commits: map[string]string{"api": loginSHA, "web": webSHA}},
		{Environment: "dev-login", RunID: "gone", Kind: pipeline.KindDeploy, Images: map[string]string{"api": apiDigest}, At: now.Add(-time.Hour),
			Refs: map[string]string{"api": "feature/old"}, Commits: map[string]string{"api": webSHA}},
	} {
		if err := st.RecordDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateInstance(ctx, "shop", "dev-login", "dev-*", func([]string) (map[string]string, error) {
		return map[string]string{"web": "127.0.0.1:9301"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, d := range []*pipeline.Deployment{
		{Refs: map[string]string{"api": "feature/login"}, Commits: map[string]string{"api": loginSHA, "web": webSHA}},
		{Refs: map[string]string{"web": "feature/cart"}, Commits: map[string]string{"api": loginSHA, "web": cartSHA}},
	} {
		d.Environment, d.RunID, d.Kind, d.At = "dev-login", run, pipeline.KindDeploy, now.Add(time.Duration(i+1)*time.Second)
		d.Images = map[string]string{"api": apiDigest, "web": webDigest}
		if err := st.RecordDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
}

// branchEnvsOf is what GET /api/environments says of staging's branch
// deployment and of the instance dev-login, as raw JSON, the keys as a
// client reads them.
func branchEnvsOf(t *testing.T, body []byte) map[string]map[string]any {
	t.Helper()
	var v struct{ Environments []map[string]any }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	var names []string
	for _, e := range v.Environments {
		name, _ := e["name"].(string)
		names = append(names, name)
		if name != "staging" && name != "dev-login" {
			continue
		}
		got := map[string]any{}
		for _, k := range []string{"version", "refs", "commits", "template", "network", "listen", "from"} {
			if e[k] != nil {
				got[k] = e[k]
			}
		}
		for _, k := range []string{"deployedAt", "createdAt", "expires"} {
			if e[k] != nil {
				got[k] = "set"
			}
		}
		out[name] = got
	}
	if diff := cmp.Diff([]string{"dev", "staging", "prod", "dev-login"}, names); diff != "" {
		t.Errorf("environments, the instances after the file's (-want +got):\n%s", diff)
	}
	return out
}

// wantBranchEnvs is what branchEnvsOf reads after seedBranches.
var wantBranchEnvs = map[string]map[string]any{
	"staging": {
		"version": "", "from": "dev", "deployedAt": "set",
		"refs":    map[string]any{"api": "feature/login"},
		"commits": map[string]any{"api": loginSHA, "web": webSHA},
	},
	"dev-login": {
		"version": "", "from": "dev", "deployedAt": "set", "createdAt": "set", "expires": "set",
		"template": "dev-*", "network": "release-shop-dev-login",
		"listen":  map[string]any{"web": "127.0.0.1:9301"},
		"refs":    map[string]any{"api": "feature/login", "web": "feature/cart"},
		"commits": map[string]any{"api": loginSHA, "web": cartSHA},
	},
}

// wantBranchPage is what the dashboard shows of them.
var wantBranchPage = map[string][]string{
	"staging": {
		`data-env="staging" data-version=""`,
		`<span class="version branch">branch api=feature/login@1a2b3c4</span>`,
		`<tr data-repo="api" data-ref="feature/login" data-commit="` + loginSHA + `">`,
		`<tr data-repo="web" data-ref="" data-commit="` + webSHA + `">`,
		`title="` + loginSHA + `">1a2b3c4d5e6f</td>`,
		`<tr data-deployment="1.0.0">`,
	},
	"dev-login": {
		`data-env="dev-login" data-version="" data-template="dev-*"`,
		`<span class="version branch">branch api=feature/login@1a2b3c4, web=feature/cart@9f8e7d6</span>`,
		`instance of <span class="mono">dev-*</span> · network <span class="mono">release-shop-dev-login</span>`,
		`data-expires=`,
		`<span data-listen="web">web on <span class="mono">127.0.0.1:9301</span></span>`,
		`<tr data-repo="api" data-ref="feature/login" data-commit="` + loginSHA + `">`,
		`<tr data-repo="web" data-ref="feature/cart" data-commit="` + cartSHA + `">`,
	},
}

// checkBranchEnvs checks what the body of GET /api/environments says of
// what seedBranches recorded.
func checkBranchEnvs(t *testing.T, body string) {
	t.Helper()
	if diff := cmp.Diff(wantBranchEnvs, branchEnvsOf(t, []byte(body))); diff != "" {
		t.Errorf("GET /api/environments (-want +got):\n%s", diff)
	}
}

// checkBranchPage checks what the dashboard's page (its HTML, or the DOM
// a browser built of it) shows of what seedBranches recorded.
func checkBranchPage(t *testing.T, page string) {
	t.Helper()
	for _, env := range slices.Sorted(maps.Keys(wantBranchPage)) {
		card := envCard(t, page, env)
		if card == "" {
			continue
		}
		for _, want := range wantBranchPage[env] {
			if !strings.Contains(card, want) {
				t.Errorf("the card of %s has no %s:\n%s", env, want, card)
			}
		}
	}
}

// TestDashboardBranchEnvironments: GET /api/environments and the
// dashboard show what a branch deployment runs (the refs and the commit
// of every repo) and, after the file's environments, each instance of a
// template with its template, network, listen addresses, refs, commits
// and expiry; nothing of an earlier instance of the same name.
func TestDashboardBranchEnvironments(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), branchPipeline)
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	seedBranches(t, s.st, waiting)
	hs := httptest.NewServer(s.handler(context.Background()))
	defer hs.Close()
	c := apiClient{t: t, url: hs.URL}

	code, body := c.do("GET", "/api/environments", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /api/environments: %d %s", code, body)
	}
	checkBranchEnvs(t, body)

	page := getPage(t, hs.URL+"/")
	checkBranchPage(t, page)
	if card := envCard(t, page, "dev-login"); strings.Contains(card, "feature/old") || strings.Count(card, "<tr data-deployment=") != 2 {
		t.Errorf("dev-login shows a deployment of the instance removed before, or not its own two:\n%s", card)
	}
	if card := envCard(t, page, "dev"); strings.Contains(card, `class="code"`) || strings.Contains(card, "data-template") {
		t.Errorf("dev runs a release, but its card shows a branch's code or a template:\n%s", card)
	}
}

// envCard is the card of environment env on the page, "" (an error)
// when there is none.
func envCard(t *testing.T, page, env string) string {
	t.Helper()
	i := strings.Index(page, `id="env-`+env+`"`)
	if i < 0 {
		t.Errorf("the page has no card of %s", env)
		return ""
	}
	rest := page[i:]
	if j := strings.Index(rest[1:], `<div class="card env`); j >= 0 {
		return rest[:j+1]
	}
	if j := strings.Index(rest, "</section>"); j >= 0 {
		return rest[:j]
	}
	return rest
}

// specInspector is an engine.SpecInspector that reports what want says
// runs in each environment of the spec it is given, and records which.
type specInspector struct {
	want map[string][]engine.Live
	mu   sync.Mutex
	seen []string
}

func (f *specInspector) Inspect(ctx context.Context, env string) ([]engine.Live, error) {
	return f.InspectSpec(ctx, nil, env)
}

func (f *specInspector) InspectSpec(_ context.Context, spec *stages.Spec, env string) ([]engine.Live, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec != nil {
		if _, ok := spec.Environments[env]; !ok {
			return nil, fmt.Errorf("environment %s is not in the spec inspected", env)
		}
	}
	f.seen = append(f.seen, env)
	return f.want[env], nil
}

// TestServeInspectsInstances: the server's inspection looks at the
// containers of each instance of a template with hosts, through the
// instance's own spec, and GET /api/environments shows their health.
func TestServeInspectsInstances(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pipeline.yaml"), strings.Replace(branchPipeline, "dev-*: {from: dev, expire: 72h}", "dev-*: {from: dev, expire: 72h, hosts: [\"tcp://127.0.0.1:9\"]}", 1))
	s, _ := newTestServer(t, dir, "", nil)
	waiting := seedAPIStore(t, s)
	seedBranches(t, s.st, waiting)
	webDigest := strings.Replace(apiDigest, "api", "web", 1)
	fake := &specInspector{want: map[string][]engine.Live{"dev-login": {
		{Service: "api", Host: "tcp://127.0.0.1:9", Digest: apiDigest, State: "running", Healthy: true},
		{Service: "web", Host: "tcp://127.0.0.1:9", Digest: webDigest, State: "exited", Health: "exited (1)"},
	}}}
	s.e.Inspector = fake
	s.inspect(context.Background(), time.Second)
	if diff := cmp.Diff([]string{"dev-login"}, fake.seen); diff != "" {
		t.Errorf("environments inspected (-want +got):\n%s", diff)
	}
	view, err := s.environments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range view.Environments {
		if e.Name != "dev-login" {
			continue
		}
		if e.InspectedAt == nil {
			t.Error("dev-login: no inspectedAt")
		}
		for _, svc := range e.Services {
			got = append(got, svc.Name+" "+svc.Health)
		}
	}
	if diff := cmp.Diff([]string{"api healthy", "web exited (1)"}, got); diff != "" {
		t.Errorf("dev-login's services (-want +got):\n%s", diff)
	}
}
