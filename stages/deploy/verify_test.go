package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
)

// TestValidateHooksVerify: the new `with:` keys are checked, each error
// naming its place.
func TestValidateHooksVerify(t *testing.T) {
	spec := &stages.Spec{Services: map[string]stages.Service{"api": {Port: 8080}, "worker": {}}}
	for _, c := range []struct {
		name string
		s    Stage
		want string
	}{
		{"unknown before service", Stage{Before: []Job{{Service: "db", Command: []string{"/x"}}}}, `with.before[0].service: unknown service "db" (known: api, worker)`},
		{"empty after command", Stage{After: []Job{{Service: "api", Command: []string{"/x"}}, {Service: "api"}}}, "with.after[1].command: required"},
		{"negative bake", Stage{Verify: &Verify{Bake: -time.Second, HTTP: []HTTPCheck{{Service: "api", Path: "/"}}}}, "with.verify.bake: negative duration -1s"},
		{"no checks", Stage{Verify: &Verify{Bake: time.Second}}, "with.verify: no checks"},
		{"http of a service without port", Stage{Verify: &Verify{HTTP: []HTTPCheck{{Service: "worker", Path: "/"}}}}, "with.verify.http[0].service: worker has no port"},
		{"relative path", Stage{Verify: &Verify{HTTP: []HTTPCheck{{Service: "api", Path: "healthz"}}}}, `with.verify.http[0].path: "healthz"`},
		{"bad status", Stage{Verify: &Verify{HTTP: []HTTPCheck{{Service: "api", Path: "/", Status: 42}}}}, "with.verify.http[0].status: 42"},
		{"verify job", Stage{Verify: &Verify{Jobs: []Job{{Service: "nope", Command: []string{"/x"}}}}}, `with.verify.jobs[0].service: unknown service "nope"`},
		{"fine", Stage{Before: []Job{{Service: "api", Command: []string{"/api", "migrate"}}}, Verify: &Verify{Bake: time.Second, HTTP: []HTTPCheck{{Service: "api", Path: "/healthz"}}}}, ""},
	} {
		err := c.s.Validate(spec)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

var hookBins struct {
	once         sync.Once
	service, job []byte
	err          error
}

// hookImage pushes an image of the fixture service as service, with the
// job binary of the docker-run tests as /job; env is baked into the image
// (FAIL_PATH=/ready: only this release fails that path).
func hookImage(tb testing.TB, service, version string, env ...string) string {
	tb.Helper()
	hookBins.once.Do(func() {
		for _, b := range []struct {
			out *[]byte
			dir string
		}{
			{&hookBins.service, filepath.Join(parts.Root(), "fixtures", "services")},
			{&hookBins.job, filepath.Join(parts.Root(), "stages", "internal", "jobtest", "testdata", "job")},
		} {
			bin := filepath.Join(tmpDir, "hook-"+filepath.Base(b.dir))
			cmd := exec.Command("go", "build", "-ldflags", "-X main.version=fixture", "-o", bin, ".")
			cmd.Dir = b.dir
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				hookBins.err = fmt.Errorf("go build %s: %v\n%s", b.dir, err, out)
				return
			}
			if *b.out, hookBins.err = os.ReadFile(bin); hookBins.err != nil {
				return
			}
		}
	})
	if hookBins.err != nil {
		tb.Fatal(hookBins.err)
	}
	dockerfile := fmt.Sprintf("FROM scratch\nENTRYPOINT [\"/%s\"]\nENV SERVICE_VERSION=%s\n", service, version)
	for _, e := range env {
		dockerfile += "ENV " + e + "\n"
	}
	dockerfile += fmt.Sprintf("COPY bin-%s /%s\nCOPY bin-job /job\n", service, service)
	tag := fmt.Sprintf("%s/%s/hook-%s:%s-%d", registryAddr, pipeline, service, version, os.Getpid())
	return buildPush(tb, tag, "", map[string][]byte{"bin-" + service: hookBins.service, "bin-job": hookBins.job, "Dockerfile": []byte(dockerfile)})
}

const dbVar = "DEPLOYTEST_DB_PASSWORD"

// hookSpec: api calls database by name; database reports the SHA-256 of
// its env_from secret, which api's jobs get too; api behind Caddy.
func hookSpec(tb testing.TB, environment string) *stages.Spec {
	health := stages.Health{HTTP: "/healthz", Timeout: 20 * time.Second}
	spec := &stages.Spec{
		Name: pipeline,
		Services: map[string]stages.Service{
			"database": {Image: pipeline + "/hook-database", Port: 8080, Health: health, Env: map[string]string{"REPORT_SECRET": dbVar}},
			"api": {Image: pipeline + "/hook-api", Port: 8080, Health: health, DependsOn: []string{"database"},
				Env: map[string]string{"UPSTREAM_URL": "http://database:8080"}},
		},
		Environments: map[string]stages.Environment{environment: {
			Hosts: []string{host1},
			Proxy: &stages.Proxy{Caddy: caddyAdmin, Listen: map[string]string{"api": parts.ListenAddr(tb)}},
			Services: map[string]stages.EnvService{
				"database": {EnvFrom: []string{dbVar}},
				"api":      {EnvFrom: []string{dbVar}},
			},
		}},
	}
	tb.Cleanup(func() { cleanup(tb, spec, environment) })
	cleanup(tb, spec, environment)
	return spec
}

// digests are the digest labels of the running containers of an
// environment, by service, jobs left out.
func digests(tb testing.TB, environment string) map[string][]string {
	tb.Helper()
	h, err := dockerhost.Open(host1)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	list, err := h.List(context.Background(), map[string]string{LabelPipeline: pipeline, LabelEnvironment: environment})
	if err != nil {
		tb.Fatal(err)
	}
	got := map[string][]string{}
	for _, c := range list {
		if target.IsJob(c.Labels) {
			got["job"] = append(got["job"], c.Name)
			continue
		}
		got[c.Labels[LabelService]] = append(got[c.Labels[LabelService]], c.Name+"="+c.Labels[LabelDigest])
	}
	return got
}

// TestHookBefore: a migration job before the deploy calls database by its
// name on the network, from the new api image, and sees its env_from
// secret; when the job fails, no container of the environment changes.
func TestHookBefore(t *testing.T) {
	needParts(t, host1)
	t.Setenv(dbVar, fmt.Sprintf("pw-%d", time.Now().UnixNano()))
	environment := envName("t-hook")
	spec := hookSpec(t, environment)
	v1 := map[string]string{"database": hookImage(t, "database", "v1"), "api": hookImage(t, "api", "v1")}
	v2 := map[string]string{"database": hookImage(t, "database", "v2"), "api": hookImage(t, "api", "v2")}
	s := &Stage{Drain: time.Second, StopTimeout: 2 * time.Second}
	if r := deploy(t, s, spec, environment, "1.0.0", v1); r.err != nil {
		t.Fatalf("deploy 1.0.0: %v", r.err)
	}
	migrate := &Stage{Drain: time.Second, StopTimeout: 2 * time.Second,
		Before: []Job{{Service: "api", Command: []string{"/job", "migrate", "http://database:8080", dbVar}}}}
	r := deploy(t, migrate, spec, environment, "2.0.0", v2)
	if r.err != nil {
		t.Fatalf("deploy 2.0.0 with a migration: %v", r.err)
	}
	// The job ran before any container changed: database still was v1.
	for _, want := range []string{"chain: database v1", "secret matches: sha256:", "job sees " + dbVar + "=***", "before[0] job of api"} {
		if !strings.Contains(r.log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(r.log, os.Getenv(dbVar)) {
		t.Errorf("the secret is in the log")
	}
	before := digests(t, environment)
	if before["api"][0] == "" || !strings.HasSuffix(before["api"][0], v2["api"]) || len(before["job"]) > 0 {
		t.Fatalf("after 2.0.0: %v", before)
	}

	v3 := map[string]string{"database": hookImage(t, "database", "v3"), "api": hookImage(t, "api", "v3")}
	failing := &Stage{Drain: time.Second, StopTimeout: 2 * time.Second,
		Before: []Job{{Service: "api", Command: []string{"/job", "fail", "3"}}}}
	began := time.Now()
	r = deploy(t, failing, spec, environment, "3.0.0", v3)
	if r.err == nil {
		t.Fatal("a failing before job: the deploy succeeded")
	}
	t.Logf("failed before job: %v (in %s)", r.err, time.Since(began).Round(time.Millisecond))
	for _, want := range []string{"before[0] job of api [/job fail 3]", "status 3"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not name %q", r.err, want)
		}
	}
	if after := digests(t, environment); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a failed before job changed the environment:\nbefore %v\nafter  %v", before, after)
	}
}

// TestVerifyRollback: a release that deploys healthy and then fails its
// verify path is rolled back by digest, under load through Caddy and from
// inside the network, and the stage fails naming the check.
func TestVerifyRollback(t *testing.T) {
	needParts(t, host1)
	needReloadSafety(t)
	t.Setenv(dbVar, "unused")
	environment := envName("t-verify")
	spec := hookSpec(t, environment)
	v1 := map[string]string{"database": hookImage(t, "database", "v1"), "api": hookImage(t, "api", "v1")}
	v2 := map[string]string{"database": hookImage(t, "database", "v2"), "api": hookImage(t, "api", "v2", "FAIL_PATH=/ready")}
	verify := &Verify{HTTP: []HTTPCheck{{Service: "api", Path: "/ready", Status: 200}}, Bake: 3 * time.Second}
	s := &Stage{Drain: time.Second, StopTimeout: 2 * time.Second, Verify: verify}
	if r := deploy(t, s, spec, environment, "1.0.0", v1); r.err != nil {
		t.Fatalf("deploy 1.0.0 (verify passes): %v", r.err)
	}

	l := startLoad([]string{"http://" + spec.Environments[environment].Proxy.Listen["api"]}, 4)
	h, probe := startProbe(t, host1, spec, environment, "load", "http://api:8080/")
	time.Sleep(time.Second)
	began := time.Now()
	r := deploy(t, s, spec, environment, "2.0.0", v2)
	took := time.Since(began)
	time.Sleep(500 * time.Millisecond)
	l.finish()
	ok, failed, first := loadSummary(t, h, probe)
	t.Logf("verify and rollback in %s: through caddy %d ok, %d failed %v; inside the network %d ok, %d failed (%s)",
		took.Round(time.Millisecond), l.ok.Load(), l.failed.Load(), l.errs, ok, failed, first)
	if r.err == nil {
		t.Fatal("a release failing its verify path: the deploy succeeded")
	}
	for _, want := range []string{"verify api GET /ready", "500", "rolled back to 1.0.0"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not name %q", r.err, want)
		}
	}
	var rb *stages.RolledBack
	if !errors.As(r.err, &rb) || rb.Version != "1.0.0" || rb.Images["api"] != v1["api"] || rb.Images["database"] != v1["database"] {
		t.Errorf("rolled back: %+v, want 1.0.0 at %v", rb, v1)
	}
	if !stages.IsPermanent(r.err) {
		t.Errorf("a failed verification is retried: %v", r.err)
	}
	if l.ok.Load() == 0 || l.failed.Load() > 0 {
		t.Errorf("through caddy: %d of %d requests failed: %v", l.failed.Load(), l.ok.Load()+l.failed.Load(), l.errs)
	}
	if ok == 0 || failed > 0 {
		t.Errorf("inside the network: %d of %d requests failed, first: %s", failed, ok+failed, first)
	}
	got := digests(t, environment)
	for svc, ref := range v1 {
		if len(got[svc]) != 1 || !strings.HasSuffix(got[svc][0], "="+ref) {
			t.Errorf("%s after the rollback: %v, want one container at %s", svc, got[svc], ref)
		}
	}
	if len(got["job"]) > 0 {
		t.Errorf("job containers left: %v", got["job"])
	}
}
