package dockerrun

import (
	"strings"
	"testing"

	"github.com/sweepboard/release/stages"
)

func TestValidate(t *testing.T) {
	spec := &stages.Spec{Services: map[string]stages.Service{"api": {}, "web": {}}}
	for _, c := range []struct {
		name  string
		stage Stage
		want  string
	}{
		{"ok", Stage{Service: "api", Command: []string{"/api", "migrate"}}, ""},
		{"no service", Stage{Command: []string{"/api"}}, "with.service: required"},
		{"unknown service", Stage{Service: "apo", Command: []string{"/api"}}, `with.service: unknown service "apo" (known: api, web)`},
		{"no command", Stage{Service: "api"}, "with.command: required"},
		{"empty program", Stage{Service: "api", Command: []string{""}}, "with.command: required"},
	} {
		err := c.stage.Validate(spec)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestPlan(t *testing.T) {
	t.Setenv("JOBTEST_SECRET", "s3cr3t-value")
	spec := &stages.Spec{
		Name: "demo",
		Services: map[string]stages.Service{"api": {
			Image: "demo/api", Env: map[string]string{"LOG_LEVEL": "info"}, Volumes: []string{"/srv/api:/data"},
		}},
		Environments: map[string]stages.Environment{"prod": {
			Hosts:    []string{"tcp://prod-1:2376", "tcp://prod-2:2376"},
			Services: map[string]stages.EnvService{"api": {Hosts: []string{"tcp://prod-2:2376"}, EnvFrom: []string{"JOBTEST_SECRET"}, Memory: "64m"}},
		}},
	}
	ref := "127.0.0.1:5000/demo/api@sha256:" + strings.Repeat("a", 64)
	env := &stages.Env{RunID: "r1", Node: "migrate", Environment: "prod", Version: "1.2.0", Attempt: 2, Spec: spec,
		Images: map[string]string{"api": ref}}
	j, err := (&Stage{Service: "api", Command: []string{"/api", "migrate"}}).plan(env)
	if err != nil {
		t.Fatal(err)
	}
	if j.Host != "tcp://prod-2:2376" {
		t.Errorf("host %s, want the first host that runs api in prod", j.Host)
	}
	s := j.Spec
	if s.Image != ref || s.Network != "release-demo-prod" || s.Memory != 64<<20 || strings.Join(s.Argv, " ") != "/api migrate" {
		t.Errorf("job %+v", s)
	}
	wantEnv := "JOBTEST_SECRET=s3cr3t-value LOG_LEVEL=info RELEASE_ENVIRONMENT=prod RELEASE_VERSION=1.2.0"
	if got := strings.Join(s.Env, " "); got != wantEnv {
		t.Errorf("env %s, want %s", got, wantEnv)
	}
	for k, v := range s.Labels {
		if strings.Contains(k+v, "s3cr3t") {
			t.Errorf("label %s=%s holds the secret", k, v)
		}
	}
	if s.Labels["release.run"] != "r1" || s.Labels["release.node"] != "migrate" || s.Labels["release.service"] != "api" ||
		s.Labels["release.environment"] != "prod" || s.Labels["release.pipeline"] != "demo" {
		t.Errorf("labels %v", s.Labels)
	}
	if !strings.HasPrefix(s.Name, "demo-prod-api-job-") || !strings.HasSuffix(s.Name, "-2") {
		t.Errorf("name %s", s.Name)
	}
	if len(j.Secrets) == 0 || j.Secrets[0] != "s3cr3t-value" {
		t.Errorf("secrets to hide: %d, want the env_from value first", len(j.Secrets))
	}

	for _, c := range []struct {
		name string
		env  func(e *stages.Env)
		want string
	}{
		{"no environment", func(e *stages.Env) { e.Environment = "" }, "no environment"},
		{"no image", func(e *stages.Env) { e.Images = nil }, "no image of api in the release"},
		{"tag", func(e *stages.Env) { e.Images = map[string]string{"api": "127.0.0.1:5000/demo/api:1.2.0"} }, "not a digest reference"},
	} {
		e := *env
		c.env(&e)
		if _, err := (&Stage{Service: "api", Command: []string{"/api"}}).plan(&e); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	t.Setenv("JOBTEST_SECRET", "")
	unset := *env
	spec.Environments["prod"].Services["api"] = stages.EnvService{EnvFrom: []string{"JOBTEST_UNSET_VAR"}}
	if _, err := (&Stage{Service: "api", Command: []string{"/api"}}).plan(&unset); err == nil || !strings.Contains(err.Error(), "JOBTEST_UNSET_VAR is not set") {
		t.Errorf("unset env_from: %v", err)
	}
}
