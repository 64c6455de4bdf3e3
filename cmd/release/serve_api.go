package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// maxBody bounds the body of a request that changes state.
const maxBody = 64 << 10

// handler is the HTTP API and the dashboard. Work a request starts (a
// promotion, the rest of an approved run) runs under runCtx, not under the
// request.
func (s *server) handler(runCtx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/runs", s.apiRuns)
	mux.HandleFunc("GET /api/runs/{id}", s.apiRun)
	mux.HandleFunc("GET /api/runs/{id}/logs", s.apiLogs)
	mux.HandleFunc("GET /api/environments", s.apiEnvironments)
	mux.HandleFunc("GET /api/schedules", s.apiSchedules)
	mux.Handle("POST /api/runs/{id}/approve", s.auth(func(w http.ResponseWriter, r *http.Request) { s.apiApprove(runCtx, w, r) }))
	mux.Handle("POST /api/promotions", s.auth(func(w http.ResponseWriter, r *http.Request) { s.apiPromote(runCtx, w, r) }))
	mux.HandleFunc("GET /{$}", s.dashboard)
	return mux
}

// auth lets a request through only with the server's bearer token. Without
// a token configured, nothing that changes state is served.
func (s *server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="release"`)
			apiError(w, http.StatusUnauthorized, errors.New("this server has no RELEASE_SERVE_TOKEN: requests that change state are refused"))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="release"`)
			apiError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
			return
		}
		next(w, r)
	})
}

func apiJSON(w http.ResponseWriter, code int, v any) {
	var b bytes.Buffer
	if err := writeJSON(&b, v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

func apiError(w http.ResponseWriter, code int, err error) {
	apiJSON(w, code, map[string]string{"error": err.Error()})
}

// apiStatus maps an error of the engine to an HTTP status, in one place:
// 404 for an unknown run, 400 for a wrong request, 423 for a run or an
// environment another owner holds, 409 for a refusal by the state of
// things (frozen, nothing waiting, nothing to promote, done, cancelled),
// 500 for everything else (a broken store).
func apiStatus(err error) int {
	var (
		ue   *engine.UsageError
		ce   *codedError
		pe   pipeline.Errors
		re   *engine.RefusedError
		held *pipeline.HeldError
		done *pipeline.DoneError
		canc *pipeline.CancelledError
	)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		return http.StatusNotFound
	case errors.As(err, &ue), errors.As(err, &pe), errors.As(err, &ce) && ce.code == exitUsage:
		return http.StatusBadRequest
	case errors.As(err, &held):
		return http.StatusLocked
	case errors.As(err, &re), errors.As(err, &done), errors.As(err, &canc), errors.Is(err, engine.ErrNothingToRelease):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// decodeBody reads a JSON object strictly: unknown fields, trailing data
// and wrong types are a 400.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, fmt.Errorf("read request body: %w", err))
		return false
	}
	return true
}

// serveRunSummary is a run in GET /api/runs: the shape of runs list -o
// json, and what started a scheduled run.
type serveRunSummary struct {
	runSummary
	Schedule   string `json:"schedule,omitempty"`
	SkipReason string `json:"skipReason,omitempty"`
}

// serveRunView is GET /api/runs/{id}: the shape of runs show -o json, plus
// the schedule that started the run and why it was skipped.
type serveRunView struct {
	runView
	Schedule   string `json:"schedule,omitempty"`
	SkipReason string `json:"skipReason,omitempty"`
}

func runSummaryOf(x *pipeline.Run) serveRunSummary {
	return serveRunSummary{
		runSummary: runSummary{ID: x.ID, Kind: x.Kind, Status: string(x.Status), Version: x.Version, Environment: x.Environment, StartedAt: x.StartedAt, FinishedAt: x.FinishedAt},
		Schedule:   x.Schedule, SkipReason: x.SkipReason,
	}
}

// runFilterOf reads which runs to list from a query, as GET /api/runs and
// the dashboard take it: status (one, or several separated by commas),
// environment, kind, and a cursor: before or after a run id.
func runFilterOf(q url.Values) (pipeline.RunFilter, error) {
	f := pipeline.RunFilter{Environment: q.Get("environment"), Kind: q.Get("kind"), Before: q.Get("before"), After: q.Get("after")}
	if v := q.Get("status"); v != "" {
		for _, st := range strings.Split(v, ",") {
			if !slices.Contains(pipeline.Statuses, pipeline.Status(st)) {
				return f, &engine.UsageError{Err: fmt.Errorf("status %q: want one of %s", st, joinStatuses(pipeline.Statuses))}
			}
			f.Status = append(f.Status, pipeline.Status(st))
		}
	}
	if f.Before != "" && f.After != "" {
		return f, &engine.UsageError{Err: errors.New("before and after: give one cursor")}
	}
	return f, nil
}

func (s *server) apiRuns(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			apiError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want a number, 0 for all", v))
			return
		}
		limit = n
	}
	f, err := runFilterOf(q)
	if err != nil {
		apiError(w, apiStatus(err), err)
		return
	}
	f.Limit = limit
	runs, err := s.st.Runs(r.Context(), f)
	if err != nil {
		apiError(w, apiStatus(err), err)
		return
	}
	out := []serveRunSummary{}
	for _, x := range runs {
		out = append(out, runSummaryOf(x))
	}
	apiJSON(w, http.StatusOK, out)
}

func (s *server) apiRun(w http.ResponseWriter, r *http.Request) {
	run, err := s.st.Run(r.Context(), r.PathValue("id"))
	if err != nil {
		apiError(w, apiStatus(err), err)
		return
	}
	apiJSON(w, http.StatusOK, serveRunView{runView: newRunView(run), Schedule: run.Schedule, SkipReason: run.SkipReason})
}

// Pages of GET /api/runs/{id}/logs: a run's log can hold hundreds of
// thousands of lines, so no answer carries all of them.
const (
	logPageDefault = 1000
	logPageMax     = 10000
)

// logPageView is GET /api/runs/{id}/logs: a page of lines, and the cursor
// of the next one.
type logPageView struct {
	Lines []pipeline.LogLine `json:"lines"`
	// Next is the after of the next page: the seq of the last line, or the
	// after asked for when there was none (a client following the log asks
	// again with it).
	Next int64 `json:"next"`
	// More says the page is full: more lines follow right now.
	More bool `json:"more"`
}

func (s *server) apiLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after int64
	limit := logPageDefault
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			apiError(w, http.StatusBadRequest, fmt.Errorf("after %q: want the seq of a line, or the next of a page", v))
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			apiError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want a number of lines from 1 to %d", v, logPageMax))
			return
		}
		limit = min(n, logPageMax)
	}
	run, err := s.st.Run(r.Context(), r.PathValue("id"))
	if err != nil {
		apiError(w, apiStatus(err), err)
		return
	}
	lines, _, err := s.st.LogPage(r.Context(), run.ID, q.Get("stage"), after, limit+1)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	page := logPageView{Lines: lines, Next: after, More: len(lines) > limit}
	if page.More {
		page.Lines = lines[:limit]
	}
	if n := len(page.Lines); n > 0 {
		page.Next = page.Lines[n-1].Seq
	}
	if page.Lines == nil {
		page.Lines = []pipeline.LogLine{}
	}
	apiJSON(w, http.StatusOK, page)
}

// scheduleView is one schedule in GET /api/schedules.
type scheduleView struct {
	Name     string    `json:"name"`
	Cron     string    `json:"cron"`
	Bump     string    `json:"bump"`
	TimeZone string    `json:"timeZone"`
	Next     time.Time `json:"next"`
}

func (s *server) schedules() []scheduleView {
	out := []scheduleView{}
	now := s.now()
	for _, name := range sortedKeys(s.p.Schedules) {
		sc := s.p.Schedules[name]
		next, _ := sc.Next(now)
		tz := sc.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		out = append(out, scheduleView{Name: name, Cron: sc.Cron, Bump: sc.Bump, TimeZone: tz, Next: next})
	}
	return out
}

func (s *server) apiSchedules(w http.ResponseWriter, r *http.Request) {
	apiJSON(w, http.StatusOK, s.schedules())
}

// liveEnv is the last inspection of an environment's containers.
type liveEnv struct {
	At   time.Time
	Live []engine.Live
	Err  string
}

// serveEnvView is an environment in GET /api/environments: the shape of
// status -o json, read from the store, with the health of the last
// inspection of its containers and its freeze windows. The instances of
// the file's templates (release env list) follow the file's environments.
type serveEnvView struct {
	Name        string             `json:"name"`
	Version     string             `json:"version"`
	RunID       string             `json:"runId"`
	DeployedAt  *time.Time         `json:"deployedAt"`
	Services    []serveServiceView `json:"services"`
	From        string             `json:"from,omitempty"`
	Approval    bool               `json:"approval"`
	Windows     []pipeline.Window  `json:"windows"`
	InspectedAt *time.Time         `json:"inspectedAt"`
	InspectErr  string             `json:"inspectError,omitempty"`
	// Refs and Commits say what a branch deployment runs, by repo, as
	// release status -o json has them: refs the branch, tag or commit the
	// newest deployment was given, commits the commit of every repo the
	// environment's code is at. An instance's refs are every ref its
	// deployments built, newest per repo, as release env list has them.
	// Absent for a release.
	Refs    map[string]string `json:"refs,omitempty"`
	Commits map[string]string `json:"commits,omitempty"`
	// Template, Network, Listen (Caddy's listen address of each service),
	// CreatedAt and Expires (when release env prune removes it unless it
	// is deployed again) are an instance's, as release env list -o json
	// has them; absent for the file's environments, and Expires without
	// the template's expire.
	Template  string            `json:"template,omitempty"`
	Network   string            `json:"network,omitempty"`
	Listen    map[string]string `json:"listen,omitempty"`
	CreatedAt *time.Time        `json:"createdAt,omitempty"`
	Expires   *time.Time        `json:"expires,omitempty"`
}

// Branch is a branch deployment for people, "" for a release.
func (v serveEnvView) Branch() string { return branchLabel(v.Refs, v.Commits) }

type serveServiceView struct {
	serviceStatusView
	// Health is what the last inspection saw: "healthy", the reason it is
	// not, or "not inspected".
	Health string `json:"health"`
}

type serveStatusView struct {
	Environments []serveEnvView `json:"environments"`
}

func (s *server) environments(ctx context.Context) (serveStatusView, error) {
	view := serveStatusView{Environments: []serveEnvView{}}
	now := s.now()
	for _, name := range s.p.Spec.EnvironmentOrder() {
		env := s.p.Spec.Environments[name]
		ev, err := s.envView(ctx, name, time.Time{})
		if err != nil {
			return view, err
		}
		ev.From, ev.Approval, ev.Windows = env.From, env.Approval == "required", s.windows(name, now)
		view.Environments = append(view.Environments, ev)
	}
	if len(s.p.Spec.Templates) == 0 {
		return view, nil
	}
	instances, err := s.e.Instances(ctx)
	if err != nil {
		return view, err
	}
	for _, in := range instances {
		tpl := s.p.Spec.Templates[in.Template]
		ev, err := s.envView(ctx, in.Name, in.CreatedAt)
		if err != nil {
			return view, err
		}
		ev.From, ev.Approval, ev.Windows = tpl.From, tpl.Approval == "required", s.windows(in.Name, now)
		created := in.CreatedAt
		ev.Template, ev.Network, ev.Listen, ev.CreatedAt, ev.Expires = in.Template, in.Network, in.Listen, &created, in.Expires
		// The newest deployment names only the refs it was given; the
		// instance runs what every one of its deployments built.
		if len(in.Refs) > 0 {
			ev.Refs = in.Refs
			commits := maps.Clone(ev.Commits)
			if commits == nil {
				commits = map[string]string{}
			}
			maps.Copy(commits, in.Commits)
			ev.Commits = commits
		}
		view.Environments = append(view.Environments, ev)
	}
	return view, nil
}

// windows are the freeze windows of environment name at now, [] for none.
func (s *server) windows(name string, now time.Time) []pipeline.Window {
	if w := s.p.Windows(name, now); w != nil {
		return w
	}
	return []pipeline.Window{}
}

// envView is environment name as its newest deployment since since
// records it (an instance's name may be an earlier instance's, removed),
// with its containers as the last inspection saw them.
func (s *server) envView(ctx context.Context, name string, since time.Time) (serveEnvView, error) {
	ev := serveEnvView{Name: name, Services: []serveServiceView{}}
	var recorded map[string]string
	hist, err := s.st.Deployments(ctx, name, 1)
	if err != nil {
		return ev, err
	}
	if len(hist) > 0 && !hist[0].At.Before(since) {
		d := hist[0]
		ev.Version, ev.RunID, ev.DeployedAt, recorded = d.Version, d.RunID, &d.At, d.Images
		if d.Branch() {
			ev.Refs, ev.Commits = d.Refs, d.Commits
		}
	}
	s.mu.Lock()
	live, inspected := s.live[name]
	s.mu.Unlock()
	if inspected {
		at := live.At
		ev.InspectedAt, ev.InspectErr = &at, live.Err
	}
	if !inspected || len(live.Live) == 0 {
		for _, svc := range sortedKeys(recorded) {
			ev.Services = append(ev.Services, serveServiceView{serviceStatusView: serviceStatusView{Name: svc, Digest: recorded[svc]}, Health: "not inspected"})
		}
	}
	for _, l := range engine.Compare(recorded, live.Live) {
		sv := serviceStatusView{Name: l.Name, Host: l.Host, Digest: l.Digest, Healthy: l.Healthy, Drift: l.Drift}
		health := "healthy"
		if !l.Healthy {
			health = l.Health
			if health == "" {
				health = "unhealthy (" + l.State + ")"
			}
		}
		ev.Services = append(ev.Services, serveServiceView{serviceStatusView: sv, Health: health})
	}
	return ev, nil
}

func (s *server) apiEnvironments(w http.ResponseWriter, r *http.Request) {
	if live, _ := strconv.ParseBool(r.URL.Query().Get("live")); live {
		s.inspect(r.Context(), 20*time.Second)
	}
	view, err := s.environments(r.Context())
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	apiJSON(w, http.StatusOK, view)
}

// inspect looks at the containers of every environment that has hosts,
// and of every instance of a template that has.
func (s *server) inspect(ctx context.Context, timeout time.Duration) {
	for _, name := range s.p.Spec.EnvironmentOrder() {
		if len(s.p.Spec.Environments[name].Hosts) == 0 {
			continue
		}
		s.inspectOne(ctx, timeout, name, s.e.Inspector.Inspect)
	}
	si, ok := s.e.Inspector.(engine.SpecInspector)
	if !ok || len(s.p.Spec.Templates) == 0 {
		return
	}
	instances, err := s.st.Instances(ctx, s.p.Spec.Name)
	if err != nil {
		s.log.Warn("list the instances to inspect", "err", err)
		return
	}
	made := map[string]bool{}
	for _, in := range instances {
		made[in.Name] = true
		if len(s.p.Spec.Templates[in.Template].Hosts) == 0 {
			continue
		}
		spec := s.p.Spec.WithInstance(in.Name, in.Template, in.Listen)
		s.inspectOne(ctx, timeout, in.Name, func(ctx context.Context, name string) ([]engine.Live, error) {
			return si.InspectSpec(ctx, spec, name)
		})
	}
	// What was seen of an instance removed since is no longer its.
	s.mu.Lock()
	for name := range s.live {
		if _, ok := s.p.Spec.Environments[name]; !ok && !made[name] {
			delete(s.live, name)
		}
	}
	s.mu.Unlock()
}

// inspectOne keeps what inspect saw in environment name.
func (s *server) inspectOne(ctx context.Context, timeout time.Duration, name string, inspect func(context.Context, string) ([]engine.Live, error)) {
	ictx, cancel := context.WithTimeout(ctx, timeout)
	live, err := inspect(ictx, name)
	cancel()
	le := liveEnv{At: time.Now().UTC(), Live: live}
	if err != nil {
		le.Err = err.Error()
	}
	s.mu.Lock()
	s.live[name] = le
	s.mu.Unlock()
}

func (s *server) inspectEvery(ctx context.Context, every time.Duration) {
	for {
		s.inspect(ctx, max(every, 10*time.Second))
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// approveRequest is the body of POST /api/runs/{id}/approve.
type approveRequest struct {
	Stage string `json:"stage"` // the node or stage; may be left out when one waits
	By    string `json:"by"`    // who approves; default "api"
	// Force goes through the freeze windows active now, with Reason; the
	// override is recorded with who and when. Without it a frozen
	// environment's nodes wait.
	Force  bool   `json:"force"`
	Reason string `json:"reason"`
}

func (s *server) apiApprove(runCtx context.Context, w http.ResponseWriter, r *http.Request) {
	var req approveRequest
	if !decodeBody(w, r, &req) {
		return
	}
	by := req.By
	if by == "" {
		by = "api"
	}
	a, err := s.e.Approve(r.Context(), engine.ApproveRequest{RunID: r.PathValue("id"), Stage: req.Stage, By: by})
	if err != nil {
		apiError(w, apiStatus(err), err)
		return
	}
	resp := approveResponse{Approved: *a}
	resp.Resumed, resp.NotResumed = s.resumeApproved(runCtx, a.RunID, by, req)
	apiJSON(w, http.StatusOK, resp)
}

// approveResponse is the answer to an approval: what was recorded, and
// whether this server went on with the run.
type approveResponse struct {
	engine.Approved
	Resumed    bool   `json:"resumed"`
	NotResumed string `json:"notResumed,omitempty"` // why not: another owner has it, a freeze, …
}

// resumeApproved continues an approved run as release resume would, and
// says whether this server now owns it: it answers once the run is claimed
// and recorded running, or refused (another owner has it, it is done), never
// before. The second value says what stopped it.
func (s *server) resumeApproved(runCtx context.Context, id, by string, req approveRequest) (bool, string) {
	if !s.track(id) {
		return false, "this server already executes the run"
	}
	log := s.log.With("run", id)
	started := make(chan struct{})
	done := make(chan error, 1)
	s.goRun(func() {
		defer s.untrack(id)
		_, err := s.e.Resume(runCtx, engine.ResumeRequest{RunID: id, Force: req.Force, Reason: req.Reason, By: by, Exec: engine.Exec{Parallel: s.parallel}},
			engine.Observer{Started: func(*pipeline.Run) { close(started) }, Notice: func(m string) { log.Info(m) }})
		if err != nil {
			log.Info("resumed run stopped", "err", err)
		}
		done <- err
	})
	select {
	case <-started:
		return true, ""
	case err := <-done:
		if err == nil {
			return true, ""
		}
		return false, err.Error()
	}
}

// promotionRequest is the body of POST /api/promotions.
type promotionRequest struct {
	Environment string `json:"environment"`
	Version     string `json:"version"` // default: the one live in the from environment
	Force       bool   `json:"force"`   // through a freeze window, with a reason
	Reason      string `json:"reason"`
	By          string `json:"by"` // who promotes; default "api"
}

func (s *server) apiPromote(runCtx context.Context, w http.ResponseWriter, r *http.Request) {
	var req promotionRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Environment == "" {
		apiError(w, http.StatusBadRequest, errors.New("environment: required"))
		return
	}
	by := req.By
	if by == "" {
		by = "api"
	}
	log := s.log.With("promote", req.Environment)
	started := make(chan string, 1)
	done := make(chan error, 1)
	s.goRun(func() {
		var id string
		run, err := s.e.Promote(runCtx, engine.PromoteRequest{
			Environment: req.Environment, Version: req.Version, Force: req.Force, Reason: req.Reason, By: by,
			Exec: engine.Exec{Parallel: s.parallel},
		}, engine.Observer{
			Started: func(r *pipeline.Run) {
				if s.track(r.ID) {
					id = r.ID
				}
				started <- r.ID
			},
			Notice: func(m string) { log.Info(m) },
		})
		if id != "" {
			s.untrack(id)
		}
		if run != nil {
			log.Info("promotion stopped", "run", run.ID, "status", run.Status, "err", err)
		}
		done <- err
	})
	accepted := func(id string) {
		apiJSON(w, http.StatusAccepted, map[string]string{"runId": id, "environment": req.Environment})
	}
	select {
	case id := <-started:
		accepted(id)
	case err := <-done:
		select {
		case id := <-started:
			accepted(id)
			return
		default:
		}
		if err == nil {
			err = errors.New("the promotion ended without starting a run")
		}
		apiError(w, apiStatus(err), err)
	case <-r.Context().Done():
	}
}

// track marks a run as executing in this process; false when it already is.
func (s *server) track(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		s.active = map[string]bool{}
	}
	if s.active[id] {
		return false
	}
	s.active[id] = true
	return true
}

func (s *server) untrack(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, id)
}
