package stages

import (
	"net/url"
	"slices"
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
	Volumes    []string          `yaml:"volumes"`
}

// Health is how a deploy decides a new container may take traffic.
type Health struct {
	HTTP    string        `yaml:"http"`    // path probed on the service's port
	Timeout time.Duration `yaml:"timeout"` // default 30s
}

// Environment is a named deploy target.
type Environment struct {
	From     string   `yaml:"from"`
	Hosts    []string `yaml:"hosts"`
	Proxy    *Proxy   `yaml:"proxy"`
	Approval string   `yaml:"approval"` // "required" or ""
	Swarm    bool     `yaml:"swarm"`
}

// Proxy is the reverse proxy in front of an environment's services.
type Proxy struct {
	Caddy string `yaml:"caddy"` // admin API address, e.g. http://127.0.0.1:2019
	// Listen is the address the proxy serves each service on, by service
	// name, e.g. {api: "127.0.0.1:8081"}.
	Listen map[string]string `yaml:"listen"`
}

// DeployOrder returns the services in depends_on order, each after the ones
// it depends on; ties are broken by name. The loader has rejected cycles.
func (s *Spec) DeployOrder() []string {
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		deps := slices.Clone(s.Services[n].DependsOn)
		slices.Sort(deps)
		for _, d := range deps {
			visit(d)
		}
		order = append(order, n)
	}
	for _, n := range s.ServiceNames() {
		visit(n)
	}
	return order
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
