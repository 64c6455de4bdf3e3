package stages

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline/deadline"
)

// Spec is the part of the pipeline file that stages read. The loader fills
// it from the file, validated and with defaults applied; stages treat it as
// read-only.
type Spec struct {
	Name string `yaml:"name"`
	// Dir is the directory of the pipeline file; relative paths in the
	// file are relative to it.
	Dir          string                 `yaml:"-"`
	Version      VersionPolicy          `yaml:"version"`
	Notes        NotesPolicy            `yaml:"notes"`
	Registry     ImageRegistry          `yaml:"registry"`
	GitHub       GitHub                 `yaml:"github"`
	Repos        map[string]Repo        `yaml:"repos"`
	Services     map[string]Service     `yaml:"services"`
	Environments map[string]Environment `yaml:"environments"`
	// Templates are the environments of the file whose name ends in "-*"
	// (dev-*), by that name: each is instantiated on demand for a branch
	// (release deploy dev-login), and is never an environment itself. The
	// loader moves them out of Environments.
	Templates map[string]Environment `yaml:"-"`
	// Timeouts bound every network operation of every stage and of the
	// store: connect, TLS, first byte, idle. Zero bounds are defaults.
	Timeouts deadline.Deadlines `yaml:"timeouts"`
}

// VersionPolicy says how release versions are named and bumped.
type VersionPolicy struct {
	TagPrefix string `yaml:"tag_prefix"` // default "v"
	Bump      string `yaml:"bump"`       // major, minor, patch or auto; default minor
}

// NotesPolicy says which commits the release notes list: `release notes`
// and the body of each GitHub release. A breaking change is listed whatever
// its type; a release commit ("chore(release): 1.4.0", "release 1.4.0")
// never is.
type NotesPolicy struct {
	// Types are the conventional commit types listed; nil is
	// DefaultNoteTypes.
	Types []string `yaml:"types"`
	// Untyped lists the commits whose message is not a conventional
	// commit, under "Other changes"; nil is true.
	Untyped *bool `yaml:"untyped"`
}

// DefaultNoteTypes are the commit types release notes list unless
// notes.types says otherwise: every type of the conventional commits
// convention but chore and ci.
var DefaultNoteTypes = []string{"feat", "fix", "perf", "revert", "docs", "refactor", "style", "test", "build"}

// Lists reports whether the notes list a change of type typ ("" for a
// message that is not a conventional commit).
func (n NotesPolicy) Lists(typ string, breaking bool) bool {
	switch {
	case breaking:
		return true
	case typ == "":
		return n.Untyped == nil || *n.Untyped
	case n.Types == nil:
		return slices.Contains(DefaultNoteTypes, typ)
	}
	return slices.Contains(n.Types, typ)
}

// ImageRegistry is the container registry images are pushed to. Credentials come
// from the Docker config or the environment, never from the pipeline file.
type ImageRegistry struct {
	URL      string `yaml:"url"`
	Insecure bool   `yaml:"insecure"`
}

// GitHub is where release notes are published.
type GitHub struct {
	Owner    string `yaml:"owner"`
	APIURL   string `yaml:"api_url"`
	TokenEnv string `yaml:"token_env"` // the name of the variable, never the token
}

// Repo is one Git repository of the release train.
type Repo struct {
	URL      string `yaml:"url"`
	Branch   string `yaml:"branch"`    // default main
	TokenEnv string `yaml:"token_env"` // https: the variable holding the token
	SSHKey   string `yaml:"ssh_key"`   // ssh: a key file; the agent otherwise
}

// Service is one container built from a repo and deployed to environments.
type Service struct {
	Repo       string            `yaml:"repo"`
	Context    string            `yaml:"context"`    // inside the repo; default "."
	Dockerfile string            `yaml:"dockerfile"` // relative to context; default Dockerfile
	Image      string            `yaml:"image"`      // repository name in the registry
	DependsOn  []string          `yaml:"depends_on"`
	Port       int               `yaml:"port"`
	Health     Health            `yaml:"health"`
	Env        map[string]string `yaml:"env"`
	// EnvFrom names variables of the release process (secrets) passed
	// into the containers by name; their values never reach the file, the
	// state, labels or logs.
	EnvFrom []string `yaml:"env_from"`
	// EnvFile is a file of NAME=VALUE lines, relative to the pipeline
	// file, read at deploy time.
	EnvFile string   `yaml:"env_file"`
	Volumes []string `yaml:"volumes"`
}

// Health is how a deploy decides a new container may take traffic: one of
// an HTTP probe, a TCP connect or a command run in the container; with
// none, the image's HEALTHCHECK when it has one, else the container
// running.
type Health struct {
	HTTP    string        `yaml:"http"`    // path probed on the service's port
	TCP     bool          `yaml:"tcp"`     // a connect to the service's port
	Exec    []string      `yaml:"exec"`    // argv run in the container; exit 0 is healthy
	Timeout time.Duration `yaml:"timeout"` // default 30s
}

// Kind says which check a health block asks for: "http", "tcp", "exec",
// or "" for the image's own.
func (h Health) Kind() string {
	switch {
	case h.HTTP != "":
		return "http"
	case h.TCP:
		return "tcp"
	case len(h.Exec) > 0:
		return "exec"
	}
	return ""
}

// Environment is a named deploy target.
type Environment struct {
	From     string   `yaml:"from"`
	Hosts    []string `yaml:"hosts"`
	Proxy    *Proxy   `yaml:"proxy"`
	Approval string   `yaml:"approval"` // "required" or ""
	// Target is the deploy target by name: "docker" (plain containers on
	// each host, the default) or "swarm" (Swarm services).
	Target string `yaml:"target"`
	// Swarm is the older spelling of target: swarm.
	Swarm bool `yaml:"swarm"`
	// Network is the name of the environment's network, on which every
	// container answers to its service's name; default
	// release-PIPELINE-ENVIRONMENT.
	Network string `yaml:"network"`
	// Services are this environment's settings of each service, merged
	// over the service's own (see Spec.ServiceIn).
	Services map[string]EnvService `yaml:"services"`
	// Expire, on a template, is how long an instance may go without a
	// deployment before release env prune removes it; 0 keeps it until its
	// branches are gone.
	Expire time.Duration `yaml:"expire"`
}

// EnvService is one service's settings in one environment.
type EnvService struct {
	Env     map[string]string `yaml:"env"`      // merged over the service's env
	EnvFrom []string          `yaml:"env_from"` // added to the service's
	EnvFile string            `yaml:"env_file"` // read after the service's
	// Replicas is the number of containers per host (Swarm: in all);
	// default 1.
	Replicas int `yaml:"replicas"`
	// Hosts are the environment's hosts (by the same addresses) that run
	// the service; default all of them.
	Hosts   []string `yaml:"hosts"`
	Memory  string   `yaml:"memory"`  // a limit such as 256m or 1g
	CPUs    float64  `yaml:"cpus"`    // a limit such as 0.5
	Restart string   `yaml:"restart"` // no, always, unless-stopped, on-failure[:N]; default unless-stopped
	// Publish binds the service's port to this host address (HOST:PORT or
	// PORT) on each host; nothing is bound unless it is set.
	Publish string `yaml:"publish"`
}

// ServiceConfig is what one service is in one environment: its settings
// merged with the environment's.
type ServiceConfig struct {
	Name     string
	Service  Service
	Env      map[string]string // the service's env with the environment's over it
	EnvFrom  []string          // the service's, then the environment's, each once
	EnvFiles []string          // the service's, then the environment's, absolute
	Replicas int
	Hosts    []string
	Memory   int64 // bytes; 0 is no limit
	CPUs     float64
	Restart  string
	Publish  string
}

// ServiceIn returns service name as environment env runs it. The loader
// has checked every reference and value it merges.
func (s *Spec) ServiceIn(env, name string) ServiceConfig {
	svc := s.Services[name]
	e := s.Environments[env]
	es := e.Services[name]
	c := ServiceConfig{Name: name, Service: svc, Env: map[string]string{}, Replicas: max(es.Replicas, 1),
		Hosts: slices.Clone(e.Hosts), CPUs: es.CPUs, Restart: es.Restart, Publish: es.Publish}
	for k, v := range svc.Env {
		c.Env[k] = v
	}
	for k, v := range es.Env {
		c.Env[k] = v
	}
	for _, n := range append(slices.Clone(svc.EnvFrom), es.EnvFrom...) {
		if !slices.Contains(c.EnvFrom, n) {
			c.EnvFrom = append(c.EnvFrom, n)
		}
	}
	for _, f := range []string{svc.EnvFile, es.EnvFile} {
		if f == "" {
			continue
		}
		if !filepath.IsAbs(f) {
			f = filepath.Join(s.Dir, f)
		}
		c.EnvFiles = append(c.EnvFiles, f)
	}
	if len(es.Hosts) > 0 {
		c.Hosts = slices.Clone(es.Hosts)
	}
	if c.Restart == "" {
		c.Restart = "unless-stopped"
	}
	c.Memory, _ = ParseBytes(es.Memory)
	return c
}

// TargetName is the deploy target of environment env: "docker" or "swarm".
func (s *Spec) TargetName(env string) string {
	e := s.Environments[env]
	switch {
	case e.Target != "":
		return e.Target
	case e.Swarm:
		return "swarm"
	}
	return "docker"
}

// NetworkName is the name of environment env's network.
func (s *Spec) NetworkName(env string) string {
	if n := s.Environments[env].Network; n != "" {
		return n
	}
	return "release-" + s.Name + "-" + env
}

// TemplateSuffix ends the name of an environment template.
const TemplateSuffix = "-*"

// IsTemplate says whether an environment name is a template's (dev-*).
func IsTemplate(name string) bool { return strings.HasSuffix(name, TemplateSuffix) }

// instanceSuffix is what an instance's name adds to its template's prefix:
// lowercase letters, digits, . and -, which the names of its network,
// containers and Caddy servers keep as they are (target.Sanitize).
var instanceSuffix = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)

// MaxInstanceName bounds an instance's name: it is part of the names of
// its network, containers and Caddy servers.
const MaxInstanceName = 48

// TemplateOf returns the template environment name is an instance of: the
// one whose prefix (its name without "*") it starts with, the longest
// prefix first. An environment of the file is no instance, whatever its
// name.
func (s *Spec) TemplateOf(name string) (string, bool) {
	if _, ok := s.Environments[name]; ok {
		return "", false
	}
	best := ""
	for t := range s.Templates {
		prefix := strings.TrimSuffix(t, "*")
		if strings.HasPrefix(name, prefix) && len(name) > len(prefix) && len(t) > len(best) {
			best = t
		}
	}
	return best, best != ""
}

// CheckInstanceName refuses a name no instance of template may have.
func CheckInstanceName(name, template string) error {
	prefix := strings.TrimSuffix(template, "*")
	rest := strings.TrimPrefix(name, prefix)
	switch {
	case len(name) > MaxInstanceName:
		return fmt.Errorf("environment %s: an instance name has at most %d characters (its network, containers and proxy servers are named after it)", name, MaxInstanceName)
	case !instanceSuffix.MatchString(rest):
		return fmt.Errorf("environment %s: what follows %s in an instance of %s is lowercase letters, digits, . and - (starting with a letter or digit)", name, prefix, template)
	}
	return nil
}

// WithInstance returns a copy of s in which environment name is an
// instance of template: the template's settings, its proxy listening on
// listen (by service), its network the default release-PIPELINE-NAME.
// The stages of a deployment to the instance read it like any other
// environment.
func (s *Spec) WithInstance(name, template string, listen map[string]string) *Spec {
	cp := *s
	cp.Environments = make(map[string]Environment, len(s.Environments)+1)
	for k, v := range s.Environments {
		cp.Environments[k] = v
	}
	e := s.Templates[template]
	e.Expire = 0
	if e.Proxy != nil {
		px := *e.Proxy
		px.Listen = make(map[string]string, len(listen))
		for k, v := range listen {
			px.Listen[k] = v
		}
		e.Proxy = &px
	}
	cp.Environments[name] = e
	return &cp
}

// ListenRange is a template's listen entry, HOST:LOW-HIGH: each instance
// takes the first port of the range that no environment and no other
// Caddy server holds.
type ListenRange struct {
	Host      string
	Low, High int
}

// ParseListenRange reads HOST:LOW-HIGH.
func ParseListenRange(text string) (ListenRange, error) {
	bad := fmt.Errorf("%q is not HOST:LOW-HIGH, a range of ports each instance takes one of (127.0.0.1:9300-9399)", text)
	i := strings.LastIndex(text, ":")
	if i < 0 {
		return ListenRange{}, bad
	}
	lo, hi, ok := strings.Cut(text[i+1:], "-")
	if !ok {
		return ListenRange{}, bad
	}
	low, err1 := strconv.Atoi(lo)
	high, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || low < 1 || high > 65535 || low > high {
		return ListenRange{}, bad
	}
	return ListenRange{Host: strings.Trim(text[:i], "[]"), Low: low, High: high}, nil
}

// Addr is port's address in the range's host.
func (r ListenRange) Addr(port int) string { return net.JoinHostPort(r.Host, strconv.Itoa(port)) }

// ParseBytes reads a memory size as Docker takes it: a number with an
// optional unit b, k, m or g (powers of 1024). "" is 0.
func ParseBytes(text string) (int64, error) {
	if text == "" {
		return 0, nil
	}
	t := strings.ToLower(strings.TrimSpace(text))
	if t == "" {
		return 0, fmt.Errorf("%q is not a size such as 256m or 1g", text)
	}
	mult := int64(1)
	switch t[len(t)-1] {
	case 'b':
		t = t[:len(t)-1]
	case 'k':
		mult, t = 1<<10, t[:len(t)-1]
	case 'm':
		mult, t = 1<<20, t[:len(t)-1]
	case 'g':
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size such as 256m or 1g", text)
	}
	return n * mult, nil
}

// Proxy is the reverse proxy in front of an environment's services.
type Proxy struct {
	Caddy string `yaml:"caddy"` // admin API address, e.g. http://127.0.0.1:2019
	// Listen is the address the proxy serves each service on, by service
	// name, e.g. {api: "127.0.0.1:8081"}.
	Listen map[string]string `yaml:"listen"`
}

// EnvironmentOrder returns the environments in promotion order: each after
// the one it is promoted from; ties are broken by name.
func (s *Spec) EnvironmentOrder() []string {
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		if from := s.Environments[n].From; from != "" {
			visit(from)
		}
		order = append(order, n)
	}
	for _, n := range sortedKeys(s.Environments) {
		visit(n)
	}
	return order
}

// ServiceNames returns the service names, sorted.
func (s *Spec) ServiceNames() []string { return sortedKeys(s.Services) }

// RepoNames returns the repo names, sorted.
func (s *Spec) RepoNames() []string { return sortedKeys(s.Repos) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortStrings(s []string) { slices.Sort(s) }

func joinQuoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return strings.Join(q, ", ")
}

// EnvRegistryPassword is the variable holding the registry's password, when
// the Docker config does not hold it.
const EnvRegistryPassword = "RELEASE_REGISTRY_PASSWORD"

// EnvServeToken is the variable holding the token `release serve` asks
// for before anything that changes state, production approvals included.
const EnvServeToken = "RELEASE_SERVE_TOKEN"

// Secrets returns the values of the variables that hold secrets and are
// set: those the pipeline reads (the registry password, the GitHub token,
// github.token_env or GITHUB_TOKEN, and each repo's token_env) and those
// release itself reads (the serve token, PGPASSWORD, and the password in
// RELEASE_STATE when it is a URL or a key=value connection string).
// Whatever shows a stage's output hides them.
func (s *Spec) Secrets(getenv func(string) string) []string {
	names := []string{EnvRegistryPassword, s.GitHub.TokenEnv, EnvServeToken, "PGPASSWORD"}
	if s.GitHub.TokenEnv == "" {
		names[1] = "GITHUB_TOKEN"
	}
	for _, r := range s.Repos {
		names = append(names, r.TokenEnv)
	}
	values := []string{statePassword(getenv("RELEASE_STATE"))}
	for _, n := range names {
		if n != "" {
			values = append(values, getenv(n))
		}
	}
	var out []string
	for _, v := range values {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// statePassword is the password in a state store's address, "" when it
// holds none or cannot be read: a URL's (postgres://user:password@host/db),
// or a key=value connection string's password=. The store parses the
// address; this only finds what to hide.
func statePassword(state string) string {
	if u, err := url.Parse(state); err == nil && u.User != nil {
		p, _ := u.User.Password()
		return p
	}
	for _, f := range strings.Fields(state) {
		if v, ok := strings.CutPrefix(f, "password="); ok {
			return strings.Trim(v, "'")
		}
	}
	return ""
}
