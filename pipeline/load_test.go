package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// noop is a stage kind for tests: it succeeds, and its `with:` has one
// optional field with a rule Validate checks.
type noop struct {
	Message string `yaml:"message"`
}

func (s *noop) Run(context.Context, *stages.Env) (stages.Outputs, error) { return nil, nil }

func (s *noop) Validate(*stages.Spec) error {
	if s.Message == "bad" {
		return errors.New("with.message: must not be \"bad\"")
	}
	return nil
}

func testRegistry() *stages.Registry {
	r := &stages.Registry{}
	for _, name := range []string{"exec", "approval", "docker-build", "deploy"} {
		k := stages.Kind{Name: name, New: func() stages.Stage { return &noop{} }}
		if name == "deploy" {
			k.Targets = []string{"docker", "swarm"}
		}
		r.Register(k)
	}
	return r
}

func parse(src string) (*pipeline.Pipeline, error) {
	return pipeline.Parse("pipeline.yaml", "/work/p/pipeline.yaml", []byte(strings.TrimLeft(src, "\n")), testRegistry())
}

// errorLines returns the messages of a load error, one per problem.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs pipeline.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not pipeline.Errors", err)
	}
	return strings.Split(errs.Error(), "\n")
}

const services = `
repos:
  api: {url: ./api}
  web: {url: ./web}
services:
  api: {repo: api, image: sb/api}
  web: {repo: web, image: sb/web, depends_on: [api]}
`

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "exec only needs no repos, services or environments",
			src: `
name: p
stages:
  hello: {uses: exec}
`,
		},
		{
			name: "unknown keys at every level, all reported",
			src: `
name: p
colour: blue
stages:
  hello: {uses: exec, neeeds: []}
  other:
    uses: exec
    retry: {attempts: 2, wait: 1s}
`,
			want: []string{
				`pipeline.yaml:2:1: unknown key "colour" in the pipeline file (known: environments, freeze, github, name, notes, registry, repos, schedules, services, stages, state, timeouts, version)`,
				`pipeline.yaml:4:23: unknown key "neeeds" in stages.hello (known: environment, for_each, needs, retry, timeout, uses, with)`,
				`pipeline.yaml:7:26: unknown key "wait" in stages.other.retry (known: attempts, backoff)`,
			},
		},
		{
			name: "per-environment service settings",
			src: `
name: p
repos:
  api: {url: /tmp/api}
services:
  api:
    repo: api
    image: sb/api
    port: 8080
    health: {http: /healthz, tcp: true}
    env_from: [DB_PASSWORD, "s3cr3t value", DB_PASSWORD]
  web: {repo: api, image: sb/web, health: {tcp: true}}
environments:
  dev:
    hosts: [unix:///a.sock, unix:///b.sock]
    target: kubernetes
    network: "bad name"
    services:
      api: {replicas: -1, hosts: [unix:///c.sock], memory: lots, cpus: -1, restart: sometimes, publish: "x:80", env_from: [OK_NAME]}
      wbe: {}
  prod: {target: docker, swarm: true}
stages:
  a: {uses: exec}
`,
			want: []string{
				`pipeline.yaml:9:5: services.api.health: one of http, tcp and exec, not 2`,
				`pipeline.yaml:10:29: services.api.env_from: "s3cr3t value" is not a variable name (letters, digits, _): name the variable, never its value`,
				`pipeline.yaml:10:45: services.api.env_from: DB_PASSWORD is named twice`,
				`pipeline.yaml:11:35: services.web.health: an http or tcp check needs the service's port`,
				`pipeline.yaml:15:13: environments.dev.target: unknown deploy target "kubernetes" (known: docker, swarm)`,
				`pipeline.yaml:16:14: environments.dev.network: "bad name" is not a Docker network name (letters, digits, _ . -)`,
				`pipeline.yaml:18:23: environments.dev.services.api.replicas: must not be negative`,
				`pipeline.yaml:18:35: environments.dev.services.api.hosts: "unix:///c.sock" is not one of environments.dev.hosts (unix:///a.sock, unix:///b.sock)`,
				`pipeline.yaml:18:60: environments.dev.services.api.memory: "lots" is not a size such as 256m or 1g`,
				`pipeline.yaml:18:72: environments.dev.services.api.cpus: must not be negative`,
				`pipeline.yaml:18:85: environments.dev.services.api.restart: "sometimes" is not no, always, unless-stopped or on-failure[:N]`,
				`pipeline.yaml:18:105: environments.dev.services.api.publish: "x:80" is not PORT or HOST:PORT`,
				`pipeline.yaml:19:7: environments.dev.services.wbe: unknown service "wbe" (known: api, web)`,
				`pipeline.yaml:20:33: environments.prod.swarm: true, but target is docker`,
			},
		},
		{
			name: "duplicate keys",
			src: `
name: p
stages:
  a: {uses: exec}
  a: {uses: approval}
name: q
`,
			want: []string{
				`pipeline.yaml:4:3: duplicate key "a" (first at line 3)`,
				`pipeline.yaml:5:1: duplicate key "name" (first at line 1)`,
			},
		},
		{
			name: "unknown with key is strict too",
			src: `
name: p
stages:
  a:
    uses: exec
    with: {mesage: hi}
`,
			want: []string{`pipeline.yaml:5:12: unknown key "mesage" in stages.a.with (known: message)`},
		},
		{
			name: "stage validation",
			src: `
name: p
stages:
  a: {uses: exec, with: {message: bad}}
`,
			want: []string{`pipeline.yaml:3:19: stages.a: with.message: must not be "bad"`},
		},
		{
			name: "unknown uses lists the known kinds",
			src: `
name: p
stages:
  a: {uses: exce}
`,
			want: []string{`pipeline.yaml:3:13: stages.a.uses: unknown stage kind "exce" (known: "approval", "deploy", "docker-build", "exec")`},
		},
		{
			name: "needs of a missing stage",
			src: `
name: p
stages:
  a: {uses: exec, needs: [b, zz]}
  b: {uses: exec}
`,
			want: []string{`pipeline.yaml:3:30: stages.a.needs: unknown stage "zz" (known: a, b)`},
		},
		{
			name: "cycle names the whole cycle",
			src: `
name: p
stages:
  a: {uses: exec, needs: [c]}
  b: {uses: exec, needs: [a]}
  c: {uses: exec, needs: [b]}
  d: {uses: exec, needs: [c]}
`,
			want: []string{`pipeline.yaml:3:19: stages: needs cycle: a → c → b → a`},
		},
		{
			name: "service with an unknown repo, depends_on an unknown service",
			src: `
name: p
repos:
  api: {url: ./api}
services:
  api: {repo: api, image: sb/api}
  web: {repo: wbe, image: sb/web, depends_on: [api, db]}
stages:
  a: {uses: exec}
`,
			want: []string{
				`pipeline.yaml:6:15: services.web.repo: unknown repo "wbe" (known: api)`,
				`pipeline.yaml:6:53: services.web.depends_on: unknown service "db" (known: api, web)`,
			},
		},
		{
			name: "context leaving the repo",
			src: `
name: p
repos: {api: {url: ./api}}
services:
  api: {repo: api, image: sb/api, context: ../other}
  web: {repo: api, image: sb/web, context: /etc}
stages:
  a: {uses: exec}
`,
			want: []string{
				`pipeline.yaml:4:44: services.api.context: "../other" leaves the repo`,
				`pipeline.yaml:5:44: services.web.context: "/etc" is absolute; it must be inside the repo`,
			},
		},
		{
			name: "environment from an unknown environment, stage in an unknown environment",
			src: `
name: p
environments:
  dev: {hosts: [unix:///var/run/docker.sock]}
  prod: {from: stagin, approval: yes please}
stages:
  a: {uses: deploy, environment: qa}
`,
			want: []string{
				`pipeline.yaml:4:16: environments.prod.from: unknown environment "stagin" (known: dev, prod)`,
				`pipeline.yaml:4:34: environments.prod.approval: "yes please" is not "required"`,
				`pipeline.yaml:6:34: stages.a.environment: unknown environment "qa" (known: dev, prod)`,
			},
		},
		{
			name: "wrong shapes and values",
			src: `
name: p
version: {bump: huge}
stages:
  a: {uses: exec, needs: b, timeout: soon, retry: {attempts: many}}
  b: {uses: exec, for_each: repo}
`,
			want: []string{
				`pipeline.yaml:2:17: version.bump: "huge" is not one of major, minor, patch, auto`,
				`pipeline.yaml:4:26: stages.a.needs: want a list, got "b"`,
				`pipeline.yaml:4:38: stages.a.timeout: "soon" is not a duration like 30s or 2m`,
				`pipeline.yaml:4:62: stages.a.retry.attempts: want a whole number, got "many"`,
				`pipeline.yaml:5:29: stages.b.for_each: "repo" is not "service"`,
			},
		},
		{
			name: "schedules",
			src: `
name: p
schedules:
  weekly: {cron: "0 9 * * MON", bump: major, time_zone: Europe/Berlin}
  broken: {cron: "61 * * * *", time_zone: Mars/Olympus}
stages:
  a: {uses: exec}
`,
			want: []string{
				`pipeline.yaml:4:18: schedules.broken.cron: end of range (61) above maximum (59): 61`,
				`pipeline.yaml:4:43: schedules.broken.time_zone: unknown time zone "Mars/Olympus"`,
			},
		},
		{
			name: "missing name and stages",
			src: `
version: {tag_prefix: v}
`,
			want: []string{
				`pipeline.yaml:1:1: name: required`,
				`pipeline.yaml:1:1: stages: at least one stage is required`,
			},
		},
		{
			name: "syntax error",
			src: `
name: p
stages: [
`,
			want: []string{`pipeline.yaml:2:1: did not find expected node content`},
		},
		{
			name: "a tab in the indentation is named as a tab",
			src:  "name: p\nstages:\n\ta: {uses: exec}\n",
			want: []string{`pipeline.yaml:3:1: a tab character indents this line; YAML indents with spaces`},
		},
		{
			name: "a tab after spaces in the indentation, at its column",
			src:  "name: p\nstages:\n  a: {uses: exec}\n  b:\n  \tuses: exec\n",
			want: []string{`pipeline.yaml:5:3: a tab character indents this line; YAML indents with spaces`},
		},
		{
			// The YAML parser alone names line 6, two blocks up.
			name: "a 3-space indent is reported on its own line",
			src: `
name: p
repos:
  api: {url: ./api}
services:
  api: {repo: api, image: sb/api}
stages:
  build:
    uses: exec
   needs: []
`,
			want: []string{`pipeline.yaml:9:4: this line is indented by 3 spaces, which lines up with no block above it (0, 2 or 4 would): did not find expected key`},
		},
		{
			name: "the blocks a list item opens are named",
			src: `
name: p
stages:
  a:
    uses: exec
    with:
      checks:
        - name: x
          path: /
         status: 200
`,
			want: []string{`pipeline.yaml:9:10: this line is indented by 9 spaces, which lines up with no block above it (0, 2, 4, 6, 8 or 10 would): did not find expected '-' indicator`},
		},
		{
			name: "a syntax error far below the block it is in",
			src: `
name: p
stages:
  a: {uses: exec}
  b: {uses: exec}
  c: {uses: exec}
  d: {uses: exec, needs: [a, b
`,
			want: []string{`pipeline.yaml:6:3: did not find expected ',' or ']'`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.src)
			if diff := cmp.Diff(tt.want, errorLines(t, err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s\ngot:\n%s", diff, strings.Join(errorLines(t, err), "\n"))
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	p, err := parse(`
name: p
` + services + `
stages:
  a: {uses: exec}
`)
	if err != nil {
		t.Fatal(err)
	}
	api := p.Spec.Services["api"]
	got := []string{p.Spec.Version.TagPrefix, p.Spec.Version.Bump, p.Spec.Repos["api"].Branch, api.Context, api.Dockerfile, api.Health.Timeout.String(), p.State, p.Spec.Dir}
	want := []string{"v", "minor", "main", ".", "Dockerfile", "30s", "/work/p/.release/state.db", "/work/p"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestHostileInputIsRejected(t *testing.T) {
	var bomb strings.Builder
	bomb.WriteString("name: p\nstages:\n  a: {uses: exec}\nx0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&bomb, "x%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	deep := "name: p\nstages: " + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + "\n"
	tests := []struct{ name, src, want string }{
		{"alias bomb", bomb.String(), `unknown key "x0"`},
		{"deep nesting", deep, "nesting deeper than 64 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pipeline.Parse("pipeline.yaml", "/p/pipeline.yaml", []byte(tt.src), testRegistry())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestApprovalGates(t *testing.T) {
	p, err := parse(`
name: p
environments:
  dev: {}
  prod: {from: dev, approval: required}
stages:
  deploy-dev:  {uses: deploy, environment: dev}
  tag:         {uses: exec, environment: prod, needs: [deploy-dev]}
  deploy-prod: {uses: deploy, environment: prod, needs: [tag]}
`)
	if err != nil {
		t.Fatal(err)
	}
	// deploy-dev → approve-prod → tag → deploy-prod
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range plan.Nodes {
		got = append(got, n.ID+" <- "+strings.Join(n.Needs, ","))
	}
	want := []string{"deploy-dev <- ", "approve-prod <- deploy-dev", "tag <- approve-prod,deploy-dev", "deploy-prod <- approve-prod,tag"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	// The prod slice, as `release promote prod` runs it, starts at the gate.
	prod, err := p.Plan(pipeline.Slice{Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if first := prod.Nodes[0]; first.ID != "approve-prod" || len(first.Needs) != 0 || first.Uses != "approval" {
		t.Errorf("first node of the prod slice = %+v, want the approval gate as a root", first)
	}
}
