package pipeline

import (
	"reflect"

	"github.com/sweepboard/release/stages"
)

// SchemaDialect is the JSON Schema draft FileSchema is written in.
const SchemaDialect = "https://json-schema.org/draft/2020-12/schema"

// JSONSchema is one JSON Schema (draft 2020-12) node: the pipeline file's
// schema, or a part of it. Only the keywords the pipeline file needs.
type JSONSchema struct {
	Schema      string `json:"$schema,omitempty"`
	ID          string `json:"$id,omitempty"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	// Type is one type name, or a list of them.
	Type          any                    `json:"type,omitempty"`
	Const         any                    `json:"const,omitempty"`
	Enum          []string               `json:"enum,omitempty"`
	Pattern       string                 `json:"pattern,omitempty"`
	Minimum       *int                   `json:"minimum,omitempty"`
	MinItems      *int                   `json:"minItems,omitempty"`
	MinProperties *int                   `json:"minProperties,omitempty"`
	Items         *JSONSchema            `json:"items,omitempty"`
	Properties    map[string]*JSONSchema `json:"properties,omitempty"`
	PropertyNames *JSONSchema            `json:"propertyNames,omitempty"`
	// AdditionalProperties is false where the loader rejects unknown keys,
	// or the schema of a map's values.
	AdditionalProperties any           `json:"additionalProperties,omitempty"`
	Required             []string      `json:"required,omitempty"`
	Not                  *JSONSchema   `json:"not,omitempty"`
	AllOf                []*JSONSchema `json:"allOf,omitempty"`
	AnyOf                []*JSONSchema `json:"anyOf,omitempty"`
	OneOf                []*JSONSchema `json:"oneOf,omitempty"`
	If                   *JSONSchema   `json:"if,omitempty"`
	Then                 *JSONSchema   `json:"then,omitempty"`
	Examples             []any         `json:"examples,omitempty"`
}

// FileSchema is the JSON Schema of the pipeline file, for editors
// (yaml-language-server) and other tools. It is generated from the types
// the loader decodes into and from the stage kinds of reg, so a key the
// loader accepts is in it and a key it rejects is not; the descriptions,
// enums, patterns and required keys below mirror the loader's checks. A
// stage's `with:` is described per kind: an if/then on its `uses:`.
//
// What it cannot say: references between names (a service's repo, a
// stage's needs, an environment's from), cycles, and checks a stage kind
// makes in its Validate beyond the enums listed here. `release validate`
// checks those.
func FileSchema(reg *stages.Registry) *JSONSchema {
	s := schemaOf(reflect.TypeFor[file](), "")
	s.Schema = SchemaDialect
	s.Title = "release pipeline file"
	s.Description = "A release pipeline: the repos, the services built from them, the environments they are deployed to (dev → staging → prod), and the stages that build, push, deploy, tag and publish. Run `release validate` for the checks a schema cannot make."

	// A freeze window is weekly, or from and to; not both (Freeze.compile).
	freeze := s.Properties["freeze"].AdditionalProperties.(*JSONSchema)
	freeze.OneOf = []*JSONSchema{
		{Required: []string{"weekly"}, Not: &JSONSchema{AnyOf: []*JSONSchema{{Required: []string{"from"}}, {Required: []string{"to"}}}}},
		{Required: []string{"from", "to"}, Not: &JSONSchema{Required: []string{"weekly"}}},
	}

	env := s.Properties["environments"].AdditionalProperties.(*JSONSchema)
	env.Properties["target"].Enum = reg.Targets()

	stage := s.Properties["stages"].AdditionalProperties.(*JSONSchema)
	names := reg.Names()
	stage.Properties["uses"].Enum = names
	for _, kind := range names {
		k, _ := reg.Lookup(kind)
		with := schemaOf(reflect.TypeOf(k.New()), "with."+kind)
		with.Description = "The settings of a stage that uses " + kind + "."
		if len(with.Properties) == 0 {
			with.Description = "A stage that uses " + kind + " has no settings."
		}
		stage.AllOf = append(stage.AllOf, &JSONSchema{
			If: &JSONSchema{
				Properties: map[string]*JSONSchema{"uses": {Const: kind}},
				Required:   []string{"uses"},
			},
			Then: &JSONSchema{Properties: map[string]*JSONSchema{"with": with}},
		})
	}
	return s
}

// schemaOf builds the schema of a Go type as the decoder reads it. path
// names the place for the refinements in schemaKeys: dotted keys, "*" for
// any key of a map, "[]" for a list's items.
func schemaOf(t reflect.Type, path string) *JSONSchema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var s *JSONSchema
	switch {
	case t == durationType:
		s = &JSONSchema{Type: "string", Pattern: durationPattern, Examples: []any{"30s"}}
	case t == nodeType:
		// `with:` of a stage: its shape depends on the stage's `uses:`.
		s = &JSONSchema{Type: "object"}
	case t.Kind() == reflect.Struct:
		s = &JSONSchema{Type: "object", Properties: map[string]*JSONSchema{}, AdditionalProperties: false}
		for key, idx := range fields(t) {
			s.Properties[key] = schemaOf(t.FieldByIndex(idx).Type, join(path, key))
		}
	case t.Kind() == reflect.Map:
		s = &JSONSchema{Type: "object", AdditionalProperties: schemaOf(t.Elem(), join(path, "*"))}
	case t.Kind() == reflect.Slice:
		s = &JSONSchema{Type: "array", Items: schemaOf(t.Elem(), path+"[]")}
	case t.Kind() == reflect.String:
		// The decoder takes a number or a boolean as a string: an env
		// value of 8080, a command [sleep, 30] or [true].
		s = &JSONSchema{Type: []string{"string", "number", "boolean"}}
	case t.Kind() == reflect.Bool:
		s = &JSONSchema{Type: "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		s = &JSONSchema{Type: "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		s = &JSONSchema{Type: "number"}
	default:
		s = &JSONSchema{}
	}
	if k, ok := schemaKeys[path]; ok {
		k.apply(s)
	}
	return s
}

// Patterns of values the loader checks, in the common subset of RE2 and
// ECMA-262 regular expressions.
const (
	// durationPattern is what time.ParseDuration reads, without a sign:
	// the loader refuses negative durations.
	durationPattern = `^\+?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`
	// branchPattern and branchRefused are what checkBranch accepts and
	// refuses: no leading "-", no part starting with "." or empty, none
	// of git's special characters; and no "..", "@{", ".lock" part,
	// trailing "." or a lone "@".
	branchPattern = `^[^-./\x00-\x20\x7f~^:?*\[\\][^/\x00-\x20\x7f~^:?*\[\\]*(/[^./\x00-\x20\x7f~^:?*\[\\][^/\x00-\x20\x7f~^:?*\[\\]*)*$`
	branchRefused = `\.\.|@\{|\.lock(/|$)|\.$|^@$`
	// outsideRepo is a context or Dockerfile path that leaves the repo.
	outsideRepo = `^(/|\.\.(/|$))`
	cronPattern = `^\s*(@\S+.*|\S+(\s+\S+){4})\s*$`
	weekTime    = `^\s*([Ss][Uu][Nn]|[Mm][Oo][Nn]|[Tt][Uu][Ee]|[Ww][Ee][Dd]|[Tt][Hh][Uu]|[Ff][Rr][Ii]|[Ss][Aa][Tt]) +([01]?[0-9]|2[0-3]):[0-5][0-9]\s*$`
	dateTime    = `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]$`
)

// schemaKey is what the schema says about one key beyond its Go type.
type schemaKey struct {
	desc     string
	enum     []string
	pattern  string
	not      string // a pattern the value must not match
	required []string
	minimum  *int
	min      *int // minItems of a list, minProperties of a mapping
	names    string
	examples []any
}

func (k schemaKey) apply(s *JSONSchema) {
	s.Description = k.desc
	if k.enum != nil {
		s.Type, s.Enum = "string", k.enum
	}
	if k.pattern != "" {
		s.Pattern = k.pattern
	}
	if k.not != "" {
		// Only a string can match; a number or boolean passes as the
		// decoder reads it.
		s.Not = &JSONSchema{Type: "string", Pattern: k.not}
	}
	s.Required = k.required
	s.Minimum = k.minimum
	if k.min != nil {
		if s.Type == "array" {
			s.MinItems = k.min
		} else {
			s.MinProperties = k.min
		}
	}
	if k.names != "" {
		s.PropertyNames = &JSONSchema{Pattern: k.names}
	}
	if k.examples != nil {
		s.Examples = k.examples
	}
}

func atLeast(n int) *int { return &n }

// schemaKeys documents every key of the pipeline file, by path: "*" is any
// key of a mapping, "[]" the items of a list, "with.KIND" a stage kind's
// `with:` settings. A key the model gains needs a line here; the schema
// test says which.
var schemaKeys = map[string]schemaKey{
	"": {required: []string{"name", "stages"}},

	"name":               {desc: "The pipeline's name: the first part of image names and the key of its releases in the state store.", examples: []any{"sweepboard"}},
	"state":              {desc: "The state store: a file path (relative to this file; default .release/state.db) or a postgres:// URL for a team store. RELEASE_STATE and --state override it.", examples: []any{".release/state.db", "postgres://release@db/release"}},
	"version":            {desc: "How release versions are named and bumped."},
	"version.tag_prefix": {desc: "The prefix of every version tag; default v (v1.4.0).", examples: []any{"v"}},
	"version.bump":       {desc: "The default bump of a run: major, minor, patch, or auto (from conventional commits); default minor.", enum: Bumps},

	"notes":         {desc: "Which commits the release notes list: `release notes` and each GitHub release's body. A breaking change is listed whatever its type; a release commit never is."},
	"notes.types":   {desc: "The conventional commit types listed; default every type but chore and ci (feat, fix, perf, revert, docs, refactor, style, test, build).", examples: []any{[]any{"feat", "fix", "perf"}}},
	"notes.untyped": {desc: "List the commits whose message is not a conventional commit, under \"Other changes\"; default true."},

	"registry":          {desc: "The container registry images are pushed to. Credentials come from the Docker config or RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD, never from this file."},
	"registry.url":      {desc: "The registry's host and port, e.g. 127.0.0.1:5000 or ghcr.io.", examples: []any{"127.0.0.1:5000"}},
	"registry.insecure": {desc: "Talk plain HTTP to the registry (a local one)."},

	"timeouts":            {desc: "Bounds on every network operation (registry, git remotes, GitHub, Caddy, Docker hosts, the store), so that a peer that never answers fails its call instead of holding the run. Each is a duration; the defaults suit a LAN or the internet."},
	"timeouts.connect":    {desc: "The TCP connect, name lookup included; default 10s.", examples: []any{"10s"}},
	"timeouts.tls":        {desc: "The TLS handshake; default 10s.", examples: []any{"10s"}},
	"timeouts.first_byte": {desc: "The wait for an answer's status line and headers once a request is sent; default 30s.", examples: []any{"30s"}},
	"timeouts.idle":       {desc: "The longest silence on an open connection while a read or write waits (a body that stops arriving); default 60s.", examples: []any{"60s"}},
	"github":              {desc: "Where the github-release stage publishes release notes."},
	"github.owner":        {desc: "The GitHub user or organisation that owns the repos; required by the github-release stage."},
	"github.api_url":      {desc: "The GitHub API base URL; default https://api.github.com/ (GitHub Enterprise: https://HOST/api/v3/).", examples: []any{"https://api.github.com/"}},
	"github.token_env":    {desc: "The name of the variable that holds the GitHub token (never the token itself); default GITHUB_TOKEN.", examples: []any{"GITHUB_TOKEN"}},

	"repos":             {desc: "The Git repositories of the release train, by name. Every one is tagged with the release version before production."},
	"repos.*":           {desc: "One Git repository.", required: []string{"url"}},
	"repos.*.url":       {desc: "The clone URL: https://…, ssh://…, git@host:path, or a path relative to this file."},
	"repos.*.branch":    {desc: "The branch releases are cut from; default main.", pattern: branchPattern, not: branchRefused, examples: []any{"main"}},
	"repos.*.token_env": {desc: "https: the name of the variable that holds the token for this remote."},
	"repos.*.ssh_key":   {desc: "ssh: a private key file; the SSH agent otherwise."},

	"services":                  {desc: "The containers built from the repos and deployed to the environments, by name."},
	"services.*":                {desc: "One service: an image built from a repo, run in every environment.", required: []string{"repo", "image"}},
	"services.*.repo":           {desc: "The repo (a key of repos) the image is built from."},
	"services.*.context":        {desc: "The build context inside the repo; default . (never outside the repo).", not: outsideRepo, examples: []any{"."}},
	"services.*.dockerfile":     {desc: "The Dockerfile, relative to the context; default Dockerfile.", not: outsideRepo, examples: []any{"Dockerfile"}},
	"services.*.image":          {desc: "The image's repository in the registry, e.g. sweepboard/api."},
	"services.*.depends_on":     {desc: "Services (keys of services) started before this one in an environment."},
	"services.*.port":           {desc: "The port the service listens on inside its container; the health check and the proxy use it.", examples: []any{8080}},
	"services.*.health":         {desc: "How a deploy decides a new container may take traffic."},
	"services.*.health.http":    {desc: "The path probed over HTTP on the service's port; a 2xx answer is healthy.", examples: []any{"/healthz"}},
	"services.*.health.tcp":     {desc: "true: a TCP connect to the service's port is healthy."},
	"services.*.health.exec":    {desc: "A command run inside the container (argv, no shell); exit 0 is healthy.", examples: []any{[]any{"/api", "-healthcheck"}}},
	"services.*.health.timeout": {desc: "How long a new container may take to become healthy; default 30s."},
	"services.*.env":            {desc: "Environment variables of the container."},
	"services.*.env_from":       {desc: "Variables of the release process (secrets) passed into the container by name; the value never reaches the file, the state, labels or logs.", examples: []any{[]any{"API_DB_PASSWORD"}}},
	"services.*.env_file":       {desc: "A file of NAME=VALUE lines, relative to the pipeline file, read at deploy time; env: wins over it."},
	"services.*.volumes":        {desc: "Volumes as HOST:CONTAINER[:ro], as docker run -v takes them."},

	"environments":                       {desc: "The deploy targets, by name: typically dev, staging, prod. A name ending in -* (dev-*) is a template: `release deploy dev-login --ref …` makes an environment of it per branch."},
	"environments.*":                     {desc: "One environment: its Docker hosts, its proxy, its approval gate and the environment its releases are promoted from."},
	"environments.*.from":                {desc: "The environment (a key of environments) whose live release `release promote` brings here."},
	"environments.*.hosts":               {desc: "The Docker engines of the environment: unix:///var/run/docker.sock, tcp://host:2376, ssh://user@host."},
	"environments.*.proxy":               {desc: "The reverse proxy in front of the environment's services, switched to a new container only once it is healthy."},
	"environments.*.proxy.caddy":         {desc: "The Caddy admin API address.", examples: []any{"http://127.0.0.1:2019"}},
	"environments.*.proxy.listen":        {desc: "The address the proxy serves each service on, by service name. On a template, a range HOST:LOW-HIGH: each instance takes the first port of it no environment and no other Caddy server holds."},
	"environments.*.approval":            {desc: "required: a person approves (`release approve`) before any stage of this environment runs.", enum: []string{"required"}},
	"environments.*.target":              {desc: "The deploy target: docker (plain containers on each host; the default) or swarm (Swarm services).", enum: []string{}},
	"environments.*.network":             {desc: "The environment's network, where each container answers to its service's name (http://api:8080); default release-PIPELINE-ENVIRONMENT."},
	"environments.*.expire":              {desc: "On a template (a name ending in -*, as dev-*): how long an instance may go without a deployment before `release env prune` removes it; default never."},
	"environments.*.services":            {desc: "This environment's settings of each service (keys of services), merged over the service's own."},
	"environments.*.services.*":          {desc: "One service in this environment."},
	"environments.*.services.*.env":      {desc: "Environment variables, merged over the service's env."},
	"environments.*.services.*.env_from": {desc: "Variables of the release process passed in by name, besides the service's env_from."},
	"environments.*.services.*.env_file": {desc: "A file of NAME=VALUE lines read at deploy time, after the service's env_file."},
	"environments.*.services.*.replicas": {desc: "Containers per host (Swarm: in all), replaced one at a time; default 1.", minimum: atLeast(0)},
	"environments.*.services.*.hosts":    {desc: "Which of the environment's hosts run the service, by the same addresses; default all."},
	"environments.*.services.*.memory":   {desc: "A memory limit: a number with b, k, m or g.", examples: []any{"256m"}},
	"environments.*.services.*.cpus":     {desc: "A CPU limit, in CPUs.", examples: []any{0.5}},
	"environments.*.services.*.restart":  {desc: "The restart policy: no, always, unless-stopped (the default) or on-failure[:N].", examples: []any{"unless-stopped"}},
	"environments.*.services.*.publish":  {desc: "Bind the service's port to this host address on each host (PORT or HOST:PORT); nothing is bound unless set.", examples: []any{"127.0.0.1:8081"}},
	"environments.*.swarm":               {desc: "true is target: swarm (the older spelling)."},

	"stages":                  {desc: "The stages of the pipeline by name, a DAG by their needs.", min: atLeast(1), names: `^[^\[\]]+$`},
	"stages.*":                {desc: "One stage: a stage kind (uses), where it runs (environment), what it waits for (needs) and its settings (with).", required: []string{"uses"}},
	"stages.*.uses":           {desc: "The stage kind."},
	"stages.*.for_each":       {desc: "service: one node per service (push[api]); a node waits only for the same service upstream.", enum: []string{"service"}},
	"stages.*.needs":          {desc: "The stages (keys of stages) this one runs after."},
	"stages.*.environment":    {desc: "The environment (a key of environments) the stage belongs to: `release promote ENV` runs the stages of ENV, behind its approval gate."},
	"stages.*.with":           {desc: "The settings of the stage's kind; which keys depend on uses."},
	"stages.*.retry":          {desc: "How often a failing node is tried again."},
	"stages.*.retry.attempts": {desc: "Total attempts; 0 and 1 mean one.", minimum: atLeast(0)},
	"stages.*.retry.backoff":  {desc: "The wait before the second attempt, doubling each time."},
	"stages.*.timeout":        {desc: "The longest one attempt of a node may take."},

	"schedules":             {desc: "Runs started on a clock by `release serve`, by name."},
	"schedules.*":           {desc: "One schedule.", required: []string{"cron"}},
	"schedules.*.cron":      {desc: "Five cron fields (minute hour day-of-month month day-of-week) or a descriptor like @weekly.", pattern: cronPattern, examples: []any{"0 9 * * MON"}},
	"schedules.*.bump":      {desc: "The bump of the runs it starts; default version.bump.", enum: Bumps},
	"schedules.*.time_zone": {desc: "The IANA time zone the cron expression is read in; default UTC.", examples: []any{"Europe/Berlin"}},

	"freeze": {desc: "Windows in which environments take no promotion, by name."},
	"freeze.*": {
		desc:     "One freeze window: weekly, or once from a date to a date.",
		required: []string{"environments"},
	},
	"freeze.*.environments": {desc: "The environments (keys of environments) the window freezes.", min: atLeast(1)},
	"freeze.*.weekly":       {desc: "A window that repeats every week; from Fri 16:00 to Mon 08:00 wraps over the weekend.", required: []string{"from", "to"}},
	"freeze.*.weekly.from":  {desc: "A weekday and time: the window starts.", pattern: weekTime, examples: []any{"Fri 16:00"}},
	"freeze.*.weekly.to":    {desc: "A weekday and time: the window ends.", pattern: weekTime, examples: []any{"Mon 08:00"}},
	"freeze.*.from":         {desc: "A one-off window's start, YYYY-MM-DD HH:MM.", pattern: dateTime, examples: []any{"2026-12-23 00:00"}},
	"freeze.*.to":           {desc: "A one-off window's end, YYYY-MM-DD HH:MM.", pattern: dateTime, examples: []any{"2027-01-02 08:00"}},
	"freeze.*.time_zone":    {desc: "The IANA time zone of the window's times; default UTC."},

	"with.deploy.drain":                 {desc: "How long old containers keep running after the proxy switched away from them; default 2s."},
	"with.deploy.stop_timeout":          {desc: "How long an old container gets between SIGTERM and SIGKILL; default 10s."},
	"with.deploy.before":                {desc: "Jobs run in order from the new release's images before any new container takes traffic (a migration); the first that fails fails the stage and no container changes."},
	"with.deploy.before[]":              {required: []string{"service", "command"}},
	"with.deploy.before[].service":      {desc: "The service whose new image (by digest), environment (env, env_file, env_from, RELEASE_VERSION), volumes and limits the job gets; it runs on the first host that runs the service, on the environment network."},
	"with.deploy.before[].command":      {desc: "The job's command as a list: [program, arg, …]; it replaces the image's entrypoint. No shell.", min: atLeast(1), examples: []any{[]any{"/api", "migrate"}}},
	"with.deploy.after":                 {desc: "Jobs run in order once every service is switched and verified; the first that fails fails the stage (nothing is rolled back)."},
	"with.deploy.after[]":               {required: []string{"service", "command"}},
	"with.deploy.after[].service":       {desc: "The service whose new image and configuration the job gets, as in before."},
	"with.deploy.after[].command":       {desc: "The job's command as a list: [program, arg, …]. No shell.", min: atLeast(1)},
	"with.deploy.verify":                {desc: "Checks after the switch, repeated for the bake time; when one fails the environment is deployed again with the digests it ran before, start-first, and the stage fails naming the check."},
	"with.deploy.verify.http":           {desc: "GETs of a path from every running container of a service, through the port the engine published for it."},
	"with.deploy.verify.http[]":         {required: []string{"service", "path"}},
	"with.deploy.verify.http[].service": {desc: "The service (with a port) whose containers answer."},
	"with.deploy.verify.http[].path":    {desc: "The path asked for, from /.", pattern: "^/", examples: []any{"/healthz"}},
	"with.deploy.verify.http[].status":  {desc: "The status every container must answer; default 200.", minimum: atLeast(100)},
	"with.deploy.verify.jobs":           {desc: "Jobs from the new images, as in before, run once after the switch; exit 0 passes."},
	"with.deploy.verify.jobs[]":         {required: []string{"service", "command"}},
	"with.deploy.verify.jobs[].service": {desc: "The service whose new image and configuration the job gets."},
	"with.deploy.verify.jobs[].command": {desc: "The job's command as a list: [program, arg, …]. No shell.", min: atLeast(1), examples: []any{[]any{"/api", "smoke"}}},
	"with.deploy.verify.bake":           {desc: "How long after the switch the HTTP checks go on, every second; default 0: once."},
	"with.docker-build.host":            {desc: "The Docker engine that builds; DOCKER_HOST or the local socket when empty."},
	"with.docker-build.builder":         {desc: "buildkit or classic; default BuildKit, or classic on an engine without it.", enum: []string{"buildkit", "classic"}},
	"with.docker-push.host":             {desc: "The Docker engine holding the built image (the one docker-build used); DOCKER_HOST or the local socket when empty."},
	"with.docker-run":                   {required: []string{"service", "command"}},
	"with.docker-run.service":           {desc: "The service whose release image (by digest), environment (env, env_file, env_from, RELEASE_VERSION), volumes and limits the job gets; it runs on the first host that runs the service in the stage's environment, on its network."},
	"with.docker-run.command":           {desc: "The job's command as a list: [program, arg, …]; it replaces the image's entrypoint. No shell. Its exit status is the node's.", min: atLeast(1), examples: []any{[]any{"/api", "migrate"}}},
	"with.docker-exec":                  {required: []string{"service", "command"}},
	"with.docker-exec.service":          {desc: "The service in whose running containers the command runs: every host of the stage's environment, every replica, one at a time."},
	"with.docker-exec.command":          {desc: "The command as a list: [program, arg, …], run inside each container without a shell; the first that fails stops the stage.", min: atLeast(1), examples: []any{[]any{"supervisorctl", "start", "deploy"}}},
	"with.exec":                         {required: []string{"command"}},
	"with.exec.command":                 {desc: "The command as a list: [program, arg, …]; the program is looked up in PATH. No shell.", min: atLeast(1)},
	"with.exec.env":                     {desc: "Variables added to the command's environment, which is otherwise PATH, HOME, USER, LOGNAME, LANG, LC_*, TZ, TMPDIR and the RELEASE_* variables of the node."},
	"with.exec.env_from":                {desc: "Variables of release's own environment the command gets, by name (letters, digits and _): nothing else of it passes, secrets included. Each must be set when the stage runs; what the command prints of a secret release knows shows as ***.", examples: []any{[]any{"NPM_TOKEN"}}},
	"with.exec.dir":                     {desc: "The working directory, relative to this file; default this file's directory."},
	"with.git-tag.parallel":             {desc: "How many repos are pushed to at once.", minimum: atLeast(0)},
}
