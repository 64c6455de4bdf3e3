package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/stages"
	dockertarget "github.com/sweepboard/release/stages/deploy/docker"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/caddy"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

var services = []string{"auth", "api", "web"}

func TestNames(t *testing.T) {
	tests := []struct {
		name, pipeline, environment, service, hash string
		container, route                           string
	}{
		{"plain", "sweepboard", "dev", "api", "0a1b2c3d4e5f", "sweepboard-dev-api-0a1b2c3d4e5f", "release_sweepboard_dev_api"},
		{"odd characters", "Sweep Board", "prod/eu", "api_v2", "0a1b2c3d4e5f", "sweep-board-prod-eu-api-v2-0a1b2c3d4e5f", "release_sweep-board_prod-eu_api-v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := []string{dockertarget.ContainerName(tt.pipeline, tt.environment, tt.service, tt.hash), routeID(tt.pipeline, tt.environment, tt.service)}
			if diff := cmp.Diff([]string{tt.container, tt.route}, got); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigHash(t *testing.T) {
	base := target.Service{Image: "r/a@sha256:1", Env: []string{"A=1"}, Config: stages.ServiceConfig{Service: stages.Service{Port: 8080, Volumes: []string{"/a:/b"}}}}
	tests := []struct {
		name   string
		change func(*target.Service)
		same   bool
	}{
		{"name and labels do not count", func(s *target.Service) { s.Name = "x"; s.Labels = map[string]string{"v": "2"} }, true},
		{"version and run do not count", func(s *target.Service) { s.Labels = map[string]string{LabelVersion: "v2", LabelRunID: "r2"} }, true},
		{"digest", func(s *target.Service) { s.Image = "r/a@sha256:2" }, false},
		{"env", func(s *target.Service) { s.Env = []string{"A=2"} }, false},
		{"port", func(s *target.Service) { s.Config.Service.Port = 9090 }, false},
		{"volumes", func(s *target.Service) { s.Config.Service.Volumes = nil }, false},
		{"publish", func(s *target.Service) { s.Config.Publish = "8080" }, false},
		{"restart", func(s *target.Service) { s.Config.Restart = "always" }, false},
		{"memory", func(s *target.Service) { s.Config.Memory = 1 << 20 }, false},
		{"cpus", func(s *target.Service) { s.Config.CPUs = 0.5 }, false},
		{"replicas", func(s *target.Service) { s.Config.Replicas = 3 }, false},
		{"health", func(s *target.Service) { s.Config.Service.Health.HTTP = "/up" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.change(&s)
			if got := configHash(s, "net") == configHash(base, "net"); got != tt.same {
				t.Errorf("configHash equal = %v, want %v", got, tt.same)
			}
		})
	}
}

func TestRunRejects(t *testing.T) {
	spec := &stages.Spec{
		Name:         "p",
		Services:     map[string]stages.Service{"api": {Port: 8080}},
		Environments: map[string]stages.Environment{"dev": {Hosts: []string{host1}}, "empty": {}},
	}
	digest := map[string]string{"api": "127.0.0.1:5000/p/api@sha256:" + strings.Repeat("a", 64)}
	tests := []struct {
		name, environment string
		images            map[string]string
		want              string
	}{
		{"unknown environment", "qa", digest, `deploy: unknown environment "qa"`},
		{"no hosts", "empty", digest, "deploy to empty: no hosts"},
		{"no image", "dev", nil, "deploy api to dev: no image in the release"},
		{"tag, not digest", "dev", map[string]string{"api": "127.0.0.1:5000/p/api:v1"}, "deploy api to dev: image 127.0.0.1:5000/p/api:v1 is not a digest reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (&Stage{}).Run(context.Background(), &stages.Env{Environment: tt.environment, Spec: spec, Images: tt.images})
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if !stages.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		stage Stage
		want  string
	}{
		{"defaults", Stage{}, ""},
		{"set", Stage{Drain: time.Second, StopTimeout: 5 * time.Second}, ""},
		{"negative drain", Stage{Drain: -time.Second}, "drain: negative duration -1s"},
		{"negative stop timeout", Stage{StopTimeout: -time.Second}, "stop_timeout: negative duration -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if err := tt.stage.Validate(&stages.Spec{}); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

// checkDeployed asserts that each host runs exactly one container per
// service, at the wanted digest, with the service's env and volumes.
func checkDeployed(t *testing.T, spec *stages.Spec, environment string, hosts []string, want map[string]string) {
	t.Helper()
	for _, h := range hosts {
		got := map[string]string{}
		for svc, cs := range running(t, h, environment) {
			if len(cs) != 1 {
				names := []string{}
				for _, c := range cs {
					names = append(names, c.Name)
				}
				t.Errorf("%s: %d containers of %s, want 1: %v", h, len(cs), svc, names)
			}
			c := cs[0]
			if !c.State.Running {
				t.Errorf("%s: %s is %s", h, c.Name, c.State.Status)
			}
			got[svc] = runningDigest(t, h, c)
			for k, v := range spec.Services[svc].Env {
				if !slices.Contains(c.Config.Env, k+"="+v) {
					t.Errorf("%s: %s env %v lacks %s=%s", h, c.Name, c.Config.Env, k, v)
				}
			}
			if diff := cmp.Diff(spec.Services[svc].Volumes, c.HostConfig.Binds, cmp.Comparer(func(a, b []string) bool {
				return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b))
			})); diff != "" {
				t.Errorf("%s: %s binds (-want +got):\n%s", h, c.Name, diff)
			}
			for k, v := range map[string]string{LabelPipeline: pipeline, LabelEnvironment: environment, LabelService: svc, LabelDigest: want[svc]} {
				if c.Config.Labels[k] != v {
					t.Errorf("%s: %s label %s = %q, want %q", h, c.Name, k, c.Config.Labels[k], v)
				}
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: running digests (-want +got):\n%s", h, diff)
		}
	}
}

// TestDeployWithoutProxy: start-first without a proxy, on the environment
// network.
func TestDeployWithoutProxy(t *testing.T) {
	needParts(t, host1)
	environment := envName("t-noproxy")
	spec := testSpec(t, environment, []string{host1}, false)
	failFast(spec, "api")
	v1 := release(t, "v1", services)
	s := &Stage{StopTimeout: 2 * time.Second}

	r := deploy(t, s, spec, environment, "v1", v1)
	if r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	want := stages.Outputs{"environment": environment}
	for k, v := range v1 {
		want[k] = v
	}
	if diff := cmp.Diff(want, r.out); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	checkDeployed(t, spec, environment, []string{host1}, v1)
	before := running(t, host1, environment)

	// The same release again changes nothing.
	r = deploy(t, s, spec, environment, "v1", v1)
	if r.err != nil {
		t.Fatalf("deploy v1 again: %v", r.err)
	}
	after := running(t, host1, environment)
	for _, svc := range services {
		if before[svc][0].ID != after[svc][0].ID {
			t.Errorf("deploy of the same release replaced %s: %s → %s", svc, before[svc][0].Name, after[svc][0].Name)
		}
	}

	v2 := release(t, "v2", services)
	if r := deploy(t, s, spec, environment, "v2", v2); r.err != nil {
		t.Fatalf("deploy v2: %v", r.err)
	}
	checkDeployed(t, spec, environment, []string{host1}, v2)

	checkNetwork(t, spec, environment, host1, "v2")

	// A version that never gets healthy: removed, and the old one serves
	// on.
	bad := release(t, "v3", services, "api")
	r = deploy(t, s, spec, environment, "v3", bad)
	if r.err == nil {
		t.Fatal("deploy of an unhealthy api succeeded")
	}
	for _, want := range []string{"deploy api to " + environment, "503 Service Unavailable", "unhealthy: api v3 fails on purpose"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not contain %q", r.err, want)
		}
	}
	wantAfterBad := map[string]string{"auth": bad["auth"], "api": v2["api"], "web": v2["web"]}
	checkDeployed(t, spec, environment, []string{host1}, wantAfterBad)
	live, err := Inspect(context.Background(), spec, environment)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range live {
		if !l.Healthy {
			t.Errorf("after the failed deploy, %s on %s is not healthy: %s", l.Service, l.Host, l.Health)
		}
	}
}

func TestInspect(t *testing.T) {
	needParts(t, host1)
	environment := envName("t-inspect")
	spec := testSpec(t, environment, []string{host1}, true)
	v1 := release(t, "v1", services)
	if r := deploy(t, &Stage{Drain: 100 * time.Millisecond}, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	// A container stops behind the deploy's back: status must see it.
	web := running(t, host1, environment)["web"][0]
	secs := 0
	if err := dockerClient(t, host1).ContainerStop(context.Background(), web.ID, container.StopOptions{Timeout: &secs}); err != nil {
		t.Fatal(err)
	}
	live, err := Inspect(context.Background(), spec, environment)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Host, Service, Digest, Version, State string
		Healthy                               bool
	}
	var got []row
	for _, l := range live {
		got = append(got, row{l.Host, l.Service, l.Digest, l.Version, l.State, l.Healthy})
	}
	want := []row{
		{host1, "api", v1["api"], "v1", "running", true},
		{host1, "auth", v1["auth"], "v1", "running", true},
		{host1, "web", v1["web"], "v1", "exited", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Inspect (-want +got):\n%s", diff)
	}

	if _, err := Inspect(context.Background(), spec, "nope"); err == nil {
		t.Error("Inspect of an unknown environment succeeded")
	}
	cleanup(t, spec, environment)
	live, err = Inspect(context.Background(), spec, environment)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range live {
		if l.State != "missing" || l.Container != "" || l.Healthy {
			t.Errorf("after cleanup: %+v, want missing", l)
		}
	}
}

// switchStats deploys to under load through the proxy and reports what
// the load generator saw.
type switchStats struct {
	ok, failed int64
	errs       []string
	// gap is, per service, the time from the start of the last request
	// the old version answered to the start of the first one the new
	// version answered; negative when both answered for a while.
	gap map[string]time.Duration
	// slowest is the longest a request waited beyond the work it asked for.
	slowest time.Duration
	// proxy is, per service, how long Caddy took to apply the switch.
	proxy map[string]time.Duration
}

var switchLine = regexp.MustCompile(`deploy \S+: (\S+): \S+ now proxies to .* \(switch took (\S+)\)`)

func (st switchStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests ok, %d failed, longest wait %v", st.ok, st.failed, st.slowest.Round(time.Millisecond))
	for _, svc := range services {
		fmt.Fprintf(&b, "; %s: caddy switch %v, requests old→new %v", svc, st.proxy[svc], st.gap[svc].Round(time.Millisecond))
	}
	return b.String()
}

func deployUnderLoad(tb testing.TB, s *Stage, spec *stages.Spec, environment, from, to string, refs map[string]string) (runResult, switchStats) {
	tb.Helper()
	var urls []string
	for _, svc := range services {
		urls = append(urls, "http://"+spec.Environments[environment].Proxy.Listen[svc])
	}
	l := startLoad(urls, 4)
	time.Sleep(300 * time.Millisecond)
	r := deploy(tb, s, spec, environment, to, refs)
	time.Sleep(300 * time.Millisecond)
	l.finish()
	st := switchStats{ok: l.ok.Load(), failed: l.failed.Load(), errs: l.errs, slowest: l.slowest,
		gap: map[string]time.Duration{}, proxy: map[string]time.Duration{}}
	for _, svc := range services {
		oldV, newV := svc+" "+from, svc+" "+to
		if first, ok := l.first[newV]; ok {
			st.gap[svc] = first.Sub(l.last[oldV])
		}
	}
	for _, m := range switchLine.FindAllStringSubmatch(r.log, -1) {
		if d, err := time.ParseDuration(m[2]); err == nil {
			st.proxy[m[1]] = d
		}
	}
	return r, st
}

func TestDeployUnderLoad(t *testing.T) {
	needParts(t, host1)
	needReloadSafety(t)
	environment := envName("t-load")
	spec := testSpec(t, environment, []string{host1}, true)
	v1, v2 := release(t, "v1", services), release(t, "v2", services)
	s := &Stage{Drain: time.Second, StopTimeout: 5 * time.Second}
	if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	checkDeployed(t, spec, environment, []string{host1}, v1)

	r, st := deployUnderLoad(t, s, spec, environment, "v1", "v2", v2)
	if r.err != nil {
		t.Fatalf("deploy v2: %v", r.err)
	}
	t.Logf("under load: %v", st)
	if st.failed != 0 {
		t.Errorf("%d requests failed during the deploy: %v", st.failed, st.errs)
	}
	if st.ok == 0 {
		t.Error("no request succeeded")
	}
	for _, svc := range services {
		if _, ok := st.gap[svc]; !ok {
			t.Errorf("the load never saw %s v2", svc)
		}
	}
	checkDeployed(t, spec, environment, []string{host1}, v2)
	checkProxy(t, spec, environment, "web", "web v2")
}

// checkProxy asserts that the proxy answers want for a service.
func checkProxy(t *testing.T, spec *stages.Spec, environment, svc, want string) {
	t.Helper()
	resp, err := http.Get("http://" + spec.Environments[environment].Proxy.Listen[svc] + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(body)); resp.StatusCode != http.StatusOK || got != want {
		t.Errorf("%s through the proxy answers %s %q, want %q", svc, resp.Status, got, want)
	}
}

func TestDeployUnhealthyUnderLoad(t *testing.T) {
	needParts(t, host1)
	needReloadSafety(t)
	environment := envName("t-unhealthy")
	spec := testSpec(t, environment, []string{host1}, true)
	failFast(spec, "api")
	v1 := release(t, "v1", services)
	s := &Stage{Drain: time.Second, StopTimeout: 5 * time.Second}
	if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	bad := release(t, "v3", services, "api")
	r, st := deployUnderLoad(t, s, spec, environment, "v1", "v3", bad)
	if r.err == nil {
		t.Fatal("deploy of an unhealthy api succeeded")
	}
	t.Logf("error: %v", r.err)
	t.Logf("under load: %d requests ok, %d failed", st.ok, st.failed)
	for _, want := range []string{"deploy api to " + environment, "not healthy after 5s", "GET /healthz: 503 Service Unavailable: unhealthy: api v3 fails on purpose"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not contain %q", r.err, want)
		}
	}
	if st.failed != 0 {
		t.Errorf("%d requests failed during the deploy: %v", st.failed, st.errs)
	}
	// web's new container was started while api came up (api's old
	// container served meanwhile); api failed, so it went again, never
	// named or routed (checkDeployed counts every container, started or
	// not).
	if !regexp.MustCompile(`web on \S+: started \S+ ahead`).MatchString(r.log) ||
		!regexp.MustCompile(`web on \S+: removed \S+, started ahead`).MatchString(r.log) {
		t.Errorf("web's container was not started ahead and removed; log:\n%s", r.log)
	}
	// auth went on to v3; api stayed at v1, and web, which depends on it,
	// was not touched.
	want := map[string]string{"auth": bad["auth"], "api": v1["api"], "web": v1["web"]}
	checkDeployed(t, spec, environment, []string{host1}, want)
	if diff := cmp.Diff(stages.Outputs{"environment": environment, "auth": bad["auth"]}, r.out); diff != "" {
		t.Errorf("partial outputs (-want +got):\n%s", diff)
	}
	checkProxy(t, spec, environment, "api", "api v1")
}

func TestDeployResumeAfterKill(t *testing.T) {
	needParts(t, host1)
	for _, point := range []string{"started", "switched"} {
		t.Run(point, func(t *testing.T) {
			environment := envName("t-kill-" + point)
			spec := testSpec(t, environment, []string{host1}, true)
			v1, v2 := release(t, "v1", services), release(t, "v2", services)
			s := &Stage{Drain: 100 * time.Millisecond, StopTimeout: 2 * time.Second}
			if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
				t.Fatalf("deploy v1: %v", r.err)
			}
			deployKilled(t, helperConfig{
				Spec: spec, Environment: environment, Version: "v2", Images: v2,
				Drain: 100 * time.Millisecond, HangAt: point, HangService: "api",
			})
			if n := len(running(t, host1, environment)["api"]); n != 2 {
				t.Fatalf("after the kill: %d api containers, want the old and the new", n)
			}
			if r := deploy(t, s, spec, environment, "v2", v2); r.err != nil {
				t.Fatalf("deploy v2 again: %v", r.err)
			}
			checkDeployed(t, spec, environment, []string{host1}, v2)
			checkProxy(t, spec, environment, "api", "api v2")
			checkProxy(t, spec, environment, "web", "web v2")
		})
	}
}

func TestDeployTwoHosts(t *testing.T) {
	hosts := []string{host1, host2}
	needParts(t, hosts...)
	needReloadSafety(t)
	environment := envName("t-two")
	spec := testSpec(t, environment, hosts, true)
	v1, v2 := release(t, "v1", services), release(t, "v2", services)
	s := &Stage{Drain: time.Second, StopTimeout: 5 * time.Second}
	if r := deploy(t, s, spec, environment, "v1", v1); r.err != nil {
		t.Fatalf("deploy v1: %v", r.err)
	}
	checkDeployed(t, spec, environment, hosts, v1)

	r, st := deployUnderLoad(t, s, spec, environment, "v1", "v2", v2)
	if r.err != nil {
		t.Fatalf("deploy v2: %v", r.err)
	}
	t.Logf("under load: %v", st)
	if st.failed != 0 {
		t.Errorf("%d requests failed during the deploy: %v", st.failed, st.errs)
	}
	checkDeployed(t, spec, environment, hosts, v2)

	// The proxy spreads each service over both hosts.
	ups, err := caddy.New(caddyAdmin, deadline.Deadlines{}).Upstreams(context.Background(), routeID(pipeline, environment, "api"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range mustInspect(t, spec, environment) {
		if l.Service == "api" {
			want = append(want, liveAddr(t, l))
		}
	}
	slices.Sort(ups)
	slices.Sort(want)
	if diff := cmp.Diff(want, ups); diff != "" || len(ups) != 2 {
		t.Errorf("api upstreams (-want +got):\n%s", diff)
	}
}

func mustInspect(t *testing.T, spec *stages.Spec, environment string) []Live {
	t.Helper()
	live, err := Inspect(context.Background(), spec, environment)
	if err != nil {
		t.Fatal(err)
	}
	return live
}

// liveAddr is where a live container's port is published on 127.0.0.1.
func liveAddr(t *testing.T, l Live) string {
	t.Helper()
	h, err := dockerhost.Open(l.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	st, err := h.State(context.Background(), l.ID, 8080)
	if err != nil {
		t.Fatal(err)
	}
	return h.DialIP() + ":" + st.HostPort
}

// BenchmarkSwitch deploys v1 then v2 of the three services under load
// through Caddy and reports the failed requests and how long both versions
// answered at once. Run with -benchtime=1x: each iteration is a deploy.
func BenchmarkSwitch(b *testing.B) {
	needParts(b, host1)
	needReloadSafety(b)
	environment := envName("b-switch")
	spec := testSpec(b, environment, []string{host1}, true)
	refs := map[string]map[string]string{"v1": release(b, "v1", services), "v2": release(b, "v2", services)}
	s := &Stage{Drain: time.Second, StopTimeout: 5 * time.Second}
	if r := deploy(b, s, spec, environment, "v1", refs["v1"]); r.err != nil {
		b.Fatalf("deploy v1: %v", r.err)
	}
	from, to := "v1", "v2"
	var failed, ok int64
	var gap, proxy, slowest time.Duration
	b.ResetTimer()
	for range b.N {
		r, st := deployUnderLoad(b, s, spec, environment, from, to, refs[to])
		if r.err != nil {
			b.Fatalf("deploy %s: %v", to, r.err)
		}
		b.Logf("%s → %s under load: %v", from, to, st)
		failed += st.failed
		ok += st.ok
		slowest = max(slowest, st.slowest)
		for _, svc := range services {
			gap = max(gap, st.gap[svc])
			proxy = max(proxy, st.proxy[svc])
		}
		from, to = to, from
	}
	b.ReportMetric(float64(failed)/float64(b.N), "failed-requests/op")
	b.ReportMetric(float64(ok)/float64(b.N), "ok-requests/op")
	b.ReportMetric(float64(proxy.Microseconds())/1000, "max-caddy-switch-ms")
	b.ReportMetric(float64(gap.Microseconds())/1000, "max-old-new-gap-ms")
	b.ReportMetric(float64(slowest.Microseconds())/1000, "longest-wait-ms")
}

func TestDoctor(t *testing.T) {
	needParts(t, host1)
	spec := &stages.Spec{Environments: map[string]stages.Environment{
		"dev":  {Hosts: []string{host1}, Proxy: &stages.Proxy{Caddy: caddyAdmin}},
		"down": {Hosts: []string{"unix:///nonexistent/docker.sock", host1}, Proxy: &stages.Proxy{Caddy: "http://127.0.0.1:1"}},
	}}
	type verdict struct {
		Name string
		OK   bool
	}
	var got []verdict
	for _, c := range (&Stage{}).Doctor(context.Background(), spec) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got = append(got, verdict{c.Name, c.Run(ctx) == nil})
		cancel()
	}
	reloadOK := caddy.CheckMigrateReq(caddyAdmin) == nil
	want := []verdict{
		{"docker host " + host1, true},
		{"caddy admin " + caddyAdmin, true},
		{"caddy reloads without resets " + caddyAdmin, reloadOK},
		{"docker host unix:///nonexistent/docker.sock", false},
		{"caddy admin http://127.0.0.1:1", false},
		// Not known: no Caddy answered there.
		{"caddy reloads without resets http://127.0.0.1:1", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Doctor (-want +got):\n%s", diff)
	}
}

// BenchmarkStopThenRun is the baseline BenchmarkSwitch is measured
// against: what a shell script does with the docker CLI, `docker stop` of
// the old container then `docker run` of the new one on the same published
// port, behind the same Caddy route, under the same load. Run with
// -benchtime=1x and compare failed-requests.
func BenchmarkStopThenRun(b *testing.B) {
	needParts(b, host1)
	needReloadSafety(b)
	docker, err := exec.LookPath("docker")
	need(b, "docker CLI", err)
	environment := envName("b-stoprun")
	spec := testSpec(b, environment, []string{host1}, true)
	refs := map[string]string{"v1": pushImage(b, "api", "v1", false), "v2": pushImage(b, "api", "v2", false)}
	port := parts.ListenAddr(b)
	_, hostPort, _ := net.SplitHostPort(port)
	name := dockertarget.ContainerName(pipeline, environment, "api", "script")
	labels := []string{"--label", LabelPipeline + "=" + pipeline, "--label", LabelEnvironment + "=" + environment, "--label", LabelService + "=api"}
	run := func(args ...string) {
		b.Helper()
		cmd := exec.Command(docker, args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+host1)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	start := func(ref string) {
		b.Helper()
		run(append(append([]string{"run", "-d", "--name", name, "-p", "127.0.0.1:" + hostPort + ":8080"}, labels...), ref)...)
		// Wait for health as the script would, with curl in a loop.
		for deadline := time.Now().Add(10 * time.Second); ; {
			if ok, _ := target.Probe(context.Background(), port, stages.Health{HTTP: "/healthz"}); ok {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s not healthy", ref)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	start(refs["v1"])
	// The plain reverse_proxy a script would configure: no retries of
	// failed dials, which would turn the downtime into stalled requests.
	r := caddy.Route{ID: routeID(pipeline, environment, "api"), Listen: spec.Environments[environment].Proxy.Listen["api"]}
	server := r.Server([]string{port})
	delete(server["routes"].([]any)[0].(map[string]any)["handle"].([]any)[0].(map[string]any), "load_balancing")
	if _, err := caddy.New(caddyAdmin, deadline.Deadlines{}).Do(context.Background(), http.MethodPut, "/config/apps/http/servers/"+r.ID, server, nil); err != nil {
		b.Fatal(err)
	}
	to := "v2"
	var failed, ok int64
	var slowest time.Duration
	b.ResetTimer()
	for range b.N {
		l := startLoad([]string{"http://" + r.Listen}, 4)
		time.Sleep(300 * time.Millisecond)
		run("stop", "-t", "10", name)
		run("rm", name)
		start(refs[to])
		time.Sleep(300 * time.Millisecond)
		l.finish()
		b.Logf("stop then run %s under load: %d ok, %d failed, e.g. %v", to, l.ok.Load(), l.failed.Load(), l.errs[:min(len(l.errs), 2)])
		failed += l.failed.Load()
		ok += l.ok.Load()
		slowest = max(slowest, l.slowest)
		to = map[string]string{"v1": "v2", "v2": "v1"}[to]
	}
	b.ReportMetric(float64(failed)/float64(b.N), "failed-requests/op")
	b.ReportMetric(float64(ok)/float64(b.N), "ok-requests/op")
	b.ReportMetric(float64(slowest.Microseconds())/1000, "longest-wait-ms")
}

// TestWith decodes `with:` blocks the way the loader does: strictly.
func TestWith(t *testing.T) {
	tests := []struct {
		name, with string
		want       Stage
		wantErr    bool
	}{
		{name: "empty", with: "{}", want: Stage{}},
		{name: "durations", with: "drain: 3s\nstop_timeout: 1m", want: Stage{Drain: 3 * time.Second, StopTimeout: time.Minute}},
		{name: "unknown key", with: "drian: 3s", wantErr: true},
		{name: "not a duration", with: "drain: soon", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Kind.New().(*Stage)
			dec := yaml.NewDecoder(strings.NewReader(tt.with))
			dec.KnownFields(true)
			err := dec.Decode(s)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decode %q: error %v, want error %v", tt.with, err, tt.wantErr)
			}
			if err == nil {
				if diff := cmp.Diff(tt.want, *s, cmpopts.IgnoreUnexported(Stage{})); diff != "" {
					t.Errorf("decoded (-want +got):\n%s", diff)
				}
			}
		})
	}
}
