// Package pipeline loads and validates pipeline files, expands them into a
// DAG of nodes, runs that DAG with the stages of a registry, and keeps the
// state of every run in a Store.
package pipeline

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline/dag"
	"github.com/sweepboard/release/stages"
	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a pipeline file. A real one is a few kilobytes; the
// bound keeps a wrong or hostile file from costing unbounded time and memory
// in the YAML parser and the decoder.
const MaxFileSize = 1 << 20

// file is the pipeline file as written.
type file struct {
	stages.Spec `yaml:",inline"`
	State       string              `yaml:"state"`
	Stages      map[string]stageDef `yaml:"stages"`
	Schedules   map[string]Schedule `yaml:"schedules"`
	Freeze      map[string]*Freeze  `yaml:"freeze"`
}

type stageDef struct {
	Uses        string        `yaml:"uses"`
	ForEach     string        `yaml:"for_each"`
	Needs       []string      `yaml:"needs"`
	Environment string        `yaml:"environment"`
	With        yaml.Node     `yaml:"with"`
	Retry       Retry         `yaml:"retry"`
	Timeout     time.Duration `yaml:"timeout"`
}

// Retry says how often a failing node is tried again, and how long to wait
// between attempts (doubling each time).
type Retry struct {
	Attempts int           `yaml:"attempts"` // total attempts; 0 and 1 mean one
	Backoff  time.Duration `yaml:"backoff"`
}

// Schedule starts runs on a cron expression.
type Schedule struct {
	Cron     string `yaml:"cron"`
	Bump     string `yaml:"bump"`
	TimeZone string `yaml:"time_zone"`
}

// Stage is one stage of a loaded pipeline.
type Stage struct {
	Name        string
	Uses        string
	ForEach     string // "service" or ""
	Needs       []string
	Environment string
	Retry       Retry
	Timeout     time.Duration
	Impl        stages.Stage
	Pos         Pos
}

// Pipeline is a loaded, valid pipeline file.
type Pipeline struct {
	Path      string // the file, absolute
	Spec      *stages.Spec
	State     string // the state store: a path (absolute) or a postgres:// URL
	Stages    map[string]*Stage
	Schedules map[string]Schedule
	Freeze    map[string]*Freeze // windows without promotions, by name
}

// Load reads and validates a pipeline file. The error of an invalid file is
// an Errors with every problem found, each at its place.
func Load(name string, reg *stages.Registry) (*Pipeline, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read pipeline file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read pipeline file: %w", err)
	}
	if info.Mode().IsRegular() && info.Size() > MaxFileSize {
		return nil, tooLarge(name, info.Size())
	}
	// Read at most one byte more than allowed: a pipe, or a file that grew
	// since Stat, is bounded too.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read pipeline file: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(name, -1)
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil, err
	}
	return Parse(name, abs, data, reg)
}

// Parse validates pipeline file content. display is the file name used in
// messages; abs locates relative paths.
func Parse(display, abs string, data []byte, reg *stages.Registry) (*Pipeline, error) {
	if len(data) > MaxFileSize {
		return nil, tooLarge(display, int64(len(data)))
	}
	d := newDecoder(display)
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(display, data, err)}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, Errors{{Pos: Pos{File: display, Line: 1, Col: 1}, Msg: "the pipeline file is empty"}}
	}
	switch sz := measure(&root, 0, &size{}); {
	case sz.depth > maxDepth:
		return nil, Errors{{Pos: Pos{File: display, Line: 1, Col: 1}, Msg: fmt.Sprintf("nesting deeper than %d levels", maxDepth)}}
	case sz.nodes > maxNodes:
		return nil, Errors{{Pos: Pos{File: display, Line: 1, Col: 1}, Msg: fmt.Sprintf("more than %d values in the file", maxNodes)}}
	}
	var f file
	d.decode(&root, reflect.ValueOf(&f).Elem(), "")
	p := &Pipeline{
		Path:      abs,
		Spec:      &f.Spec,
		Stages:    map[string]*Stage{},
		Schedules: f.Schedules,
		Freeze:    f.Freeze,
	}
	p.Spec.Dir = filepath.Dir(abs)
	v := &validator{d: d, f: &f, p: p, reg: reg}
	v.validate()
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	return p, nil
}

// tooLarge is the error of a file over MaxFileSize; size < 0 is unknown.
func tooLarge(file string, size int64) Errors {
	msg := fmt.Sprintf("the file is larger than the %d bytes (1 MiB) a pipeline file may be", MaxFileSize)
	if size >= 0 {
		msg = fmt.Sprintf("the file is %d bytes, larger than the %d bytes (1 MiB) a pipeline file may be", size, MaxFileSize)
	}
	return Errors{{Pos: Pos{File: file, Line: 1, Col: 1}, Msg: msg}}
}

// maxDepth bounds the nesting of mappings and lists. The YAML parser stops
// at 10,000 levels; a pipeline file needs fewer than ten.
const maxDepth = 64

// size is how deep a YAML tree nests and how many nodes it has, aliases
// counted as one.
type size struct{ depth, nodes int }

// measure walks the tree without following aliases, and stops as soon as a
// bound is passed, so that a refused file is not decoded at all.
func measure(n *yaml.Node, d int, sz *size) *size {
	sz.nodes++
	sz.depth = max(sz.depth, d)
	for _, c := range n.Content {
		if sz.depth > maxDepth || sz.nodes > maxNodes {
			break
		}
		measure(c, d+1, sz)
	}
	return sz
}

type validator struct {
	d   *decoder
	f   *file
	p   *Pipeline
	reg *stages.Registry
}

func (v *validator) errorf(path []string, format string, args ...any) {
	v.d.errorAt(v.d.posOf(path...), format, args...)
}

func (v *validator) validate() {
	f, spec := v.f, v.p.Spec
	if f.Name == "" {
		v.errorf(nil, "name: required")
	}
	if spec.Version.TagPrefix == "" {
		spec.Version.TagPrefix = "v"
	}
	if spec.Version.Bump == "" {
		spec.Version.Bump = "minor"
	}
	if !slices.Contains(Bumps, spec.Version.Bump) {
		v.errorf([]string{"version", "bump"}, "version.bump: %q is not one of %s", spec.Version.Bump, strings.Join(Bumps, ", "))
	}
	v.notes()
	v.state()
	v.repos()
	v.services()
	v.environments()
	v.stages()
	v.schedules()
	v.freeze()
}

func (v *validator) freeze() {
	envs := map[string]bool{}
	for name := range v.p.Spec.Environments {
		envs[name] = true
	}
	for _, name := range sortedKeys(v.f.Freeze) {
		f := v.f.Freeze[name]
		if f == nil {
			v.errorf([]string{"freeze", name}, "freeze.%s: want a window", name)
			continue
		}
		if err := f.compile(envs); err != nil {
			v.errorf([]string{"freeze", name}, "freeze.%s: %v", name, err)
		}
	}
}

// noteTypeRE is a conventional commit type as the notes compare it:
// lowercase, as ParseConventional reads every type.
var noteTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

func (v *validator) notes() {
	seen := map[string]bool{}
	for i, t := range v.p.Spec.Notes.Types {
		path := []string{"notes", "types", strconv.Itoa(i)}
		switch {
		case !noteTypeRE.MatchString(t):
			v.errorf(path, "notes.types: %q is not a commit type (lowercase letters, digits and dashes, like feat or fix)", t)
		case seen[t]:
			v.errorf(path, "notes.types: %q is listed twice", t)
		}
		seen[t] = true
	}
}

// Bumps are the ways a version may be bumped.
var Bumps = []string{"major", "minor", "patch", "auto"}

// keywordValue is how a libpq key=value connection string starts.
var keywordValue = regexp.MustCompile(`^\s*[a-z_]+\s*=`)

func (v *validator) state() {
	s := v.f.State
	switch {
	case s == "":
		s = filepath.Join(v.p.Spec.Dir, ".release", "state.db")
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
	case keywordValue.MatchString(s):
		// A libpq key=value connection string: the store decides whether
		// it is one, never a path beside the file.
	case filepath.IsAbs(s):
	default:
		s = filepath.Join(v.p.Spec.Dir, s)
	}
	v.p.State = s
}

func (v *validator) repos() {
	for _, name := range sortedKeys(v.f.Repos) {
		r := v.f.Repos[name]
		if r.URL == "" {
			v.errorf([]string{"repos", name}, "repos.%s.url: required", name)
		}
		if r.Branch == "" {
			r.Branch = "main"
		} else if err := checkBranch(r.Branch); err != nil {
			v.errorf([]string{"repos", name, "branch"}, "repos.%s.branch: %v", name, err)
		}
		v.f.Repos[name] = r
	}
}

// checkBranch refuses what git check-ref-format --branch refuses: a branch
// name starting with "-" would read as an option to any git command it
// reached, and the others are not names git can store.
func checkBranch(b string) error {
	bad := func(why string) error { return fmt.Errorf("%q is not a branch name: %s", b, why) }
	switch {
	case strings.HasPrefix(b, "-"):
		return bad(`it starts with "-"`)
	case b == "@":
		return bad(`it is "@"`)
	case strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") || strings.Contains(b, "//"):
		return bad(`it starts or ends with "/" or has "//"`)
	case strings.HasSuffix(b, "."):
		return bad(`it ends with "."`)
	case strings.Contains(b, ".."), strings.Contains(b, "@{"):
		return bad(`it has ".." or "@{"`)
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return bad(fmt.Sprintf("it has %q", c))
		}
	}
	for _, part := range strings.Split(b, "/") {
		if strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return bad(`a part of it starts with "." or ends with ".lock"`)
		}
	}
	return nil
}

func (v *validator) services() {
	spec := v.p.Spec
	for _, name := range sortedKeys(spec.Services) {
		s := spec.Services[name]
		at := []string{"services", name}
		if s.Repo == "" {
			v.errorf(at, "services.%s.repo: required", name)
		} else if _, ok := spec.Repos[s.Repo]; !ok {
			v.errorf(append(at, "repo"), "services.%s.repo: unknown repo %q (known: %s)", name, s.Repo, known(spec.Repos))
		}
		if s.Image == "" {
			v.errorf(at, "services.%s.image: required", name)
		}
		if s.Context == "" {
			s.Context = "."
		}
		if s.Dockerfile == "" {
			s.Dockerfile = "Dockerfile"
		}
		if err := insideRepo(s.Context); err != nil {
			v.errorf(append(at, "context"), "services.%s.context: %v", name, err)
		} else if err := insideRepo(path.Join(s.Context, s.Dockerfile)); err != nil {
			v.errorf(append(at, "dockerfile"), "services.%s.dockerfile: %v", name, err)
		}
		if s.Health.Timeout == 0 {
			s.Health.Timeout = 30 * time.Second
		}
		kinds := 0
		for _, set := range []bool{s.Health.HTTP != "", s.Health.TCP, len(s.Health.Exec) > 0} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			v.errorf(append(at, "health"), "services.%s.health: one of http, tcp and exec, not %d", name, kinds)
		}
		if (s.Health.HTTP != "" || s.Health.TCP) && s.Port == 0 {
			v.errorf(append(at, "health"), "services.%s.health: an http or tcp check needs the service's port", name)
		}
		v.envFrom(append(at, "env_from"), "services."+name+".env_from", s.EnvFrom)
		for i, dep := range s.DependsOn {
			if _, ok := spec.Services[dep]; !ok {
				v.errorf(append(at, "depends_on", fmt.Sprint(i)), "services.%s.depends_on: unknown service %q (known: %s)", name, dep, known(spec.Services))
			}
		}
		spec.Services[name] = s
	}
	names := sortedKeys(spec.Services)
	if c := dag.FindCycle(names, func(n string) []string { return spec.Services[n].DependsOn }); c != nil {
		v.errorf([]string{"services", c[0], "depends_on"}, "services: depends_on cycle: %s", strings.Join(c, " → "))
	}
}

var (
	dockerName    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	restartPolicy = regexp.MustCompile(`^(no|always|unless-stopped|on-failure(:[0-9]+)?)$`)
	publishAddr   = regexp.MustCompile(`^([0-9.]+:|\[[0-9a-fA-F:]+\]:)?[0-9]{1,5}$`)
	variableName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// envFrom checks the names of an env_from list: variables, each once.
func (v *validator) envFrom(at []string, where string, names []string) {
	for i, n := range names {
		switch {
		case !variableName.MatchString(n):
			v.errorf(append(slices.Clone(at), fmt.Sprint(i)), "%s: %q is not a variable name (letters, digits, _): name the variable, never its value", where, n)
		case slices.Index(names, n) < i:
			v.errorf(append(slices.Clone(at), fmt.Sprint(i)), "%s: %s is named twice", where, n)
		}
	}
}

// insideRepo rejects paths that could leave the repo.
func insideRepo(p string) error {
	if path.IsAbs(p) || filepath.IsAbs(p) {
		return fmt.Errorf("%q is absolute; it must be inside the repo", p)
	}
	clean := path.Clean(p)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("%q leaves the repo", p)
	}
	return nil
}

func (v *validator) environments() {
	envs := v.p.Spec.Environments
	for _, name := range sortedKeys(envs) {
		e := envs[name]
		at := []string{"environments", name}
		if e.From != "" {
			if _, ok := envs[e.From]; !ok {
				v.errorf(append(at, "from"), "environments.%s.from: unknown environment %q (known: %s)", name, e.From, known(envs))
			}
		}
		if e.Approval != "" && e.Approval != "required" {
			v.errorf(append(at, "approval"), "environments.%s.approval: %q is not \"required\"", name, e.Approval)
		}
		switch {
		case e.Target != "" && !slices.Contains(v.reg.Targets(), e.Target):
			v.errorf(append(at, "target"), "environments.%s.target: unknown deploy target %q (known: %s)", name, e.Target, strings.Join(v.reg.Targets(), ", "))
		case e.Target == "docker" && e.Swarm:
			v.errorf(append(at, "swarm"), "environments.%s.swarm: true, but target is docker", name)
		}
		if e.Network != "" && !dockerName.MatchString(e.Network) {
			v.errorf(append(at, "network"), "environments.%s.network: %q is not a Docker network name (letters, digits, _ . -)", name, e.Network)
		}
		for _, svc := range sortedKeys(e.Services) {
			es, sat := e.Services[svc], append(slices.Clone(at), "services", svc)
			where := "environments." + name + ".services." + svc
			if _, ok := v.p.Spec.Services[svc]; !ok {
				v.errorf(sat, "%s: unknown service %q (known: %s)", where, svc, known(v.p.Spec.Services))
			}
			if es.Replicas < 0 {
				v.errorf(append(sat, "replicas"), "%s.replicas: must not be negative", where)
			}
			for i, h := range es.Hosts {
				if !slices.Contains(e.Hosts, h) {
					v.errorf(append(sat, "hosts", fmt.Sprint(i)), "%s.hosts: %q is not one of environments.%s.hosts (%s)", where, h, name, strings.Join(e.Hosts, ", "))
				}
			}
			if _, err := stages.ParseBytes(es.Memory); err != nil {
				v.errorf(append(sat, "memory"), "%s.memory: %v", where, err)
			}
			if es.CPUs < 0 {
				v.errorf(append(sat, "cpus"), "%s.cpus: must not be negative", where)
			}
			if es.Restart != "" && !restartPolicy.MatchString(es.Restart) {
				v.errorf(append(sat, "restart"), "%s.restart: %q is not no, always, unless-stopped or on-failure[:N]", where, es.Restart)
			}
			if es.Publish != "" && !publishAddr.MatchString(es.Publish) {
				v.errorf(append(sat, "publish"), "%s.publish: %q is not PORT or HOST:PORT", where, es.Publish)
			}
			v.envFrom(append(sat, "env_from"), where+".env_from", es.EnvFrom)
		}
		if e.Proxy != nil {
			for _, svc := range sortedKeys(e.Proxy.Listen) {
				if _, ok := v.p.Spec.Services[svc]; !ok {
					v.errorf(append(at, "proxy", "listen", svc), "environments.%s.proxy.listen: unknown service %q (known: %s)", name, svc, known(v.p.Spec.Services))
				}
			}
		}
		if stages.IsTemplate(name) {
			v.template(name, e)
		} else {
			if strings.Contains(name, "*") {
				v.errorf(at, "environments.%s: a * is only the end of a template's name, as in dev-*", name)
			}
			if e.Expire != 0 {
				v.errorf(append(at, "expire"), "environments.%s.expire: only a template (a name ending in -*) has instances that expire", name)
			}
			if e.From != "" && stages.IsTemplate(e.From) {
				v.errorf(append(at, "from"), "environments.%s.from: %s is a template, which runs nothing to promote from", name, e.From)
			}
		}
	}
	// Templates are no environments: they leave the map every other part
	// reads, for Templates.
	for _, name := range sortedKeys(envs) {
		if stages.IsTemplate(name) {
			if v.p.Spec.Templates == nil {
				v.p.Spec.Templates = map[string]stages.Environment{}
			}
			v.p.Spec.Templates[name] = envs[name]
			delete(envs, name)
		}
	}
	names := sortedKeys(envs)
	if c := dag.FindCycle(names, func(n string) []string {
		if f := envs[n].From; f != "" {
			return []string{f}
		}
		return nil
	}); c != nil {
		v.errorf([]string{"environments", c[0], "from"}, "environments: from cycle: %s", strings.Join(c, " → "))
	}
}

// template checks what an environment template must be: each instance
// gets a network, containers and listen addresses of its own, and runs the
// stages and the release of the template's from environment.
func (v *validator) template(name string, e stages.Environment) {
	at := []string{"environments", name}
	prefix := strings.TrimSuffix(name, "*")
	if strings.Count(name, "*") > 1 || prefix == "-" || !dockerName.MatchString(strings.TrimSuffix(prefix, "-")) {
		v.errorf(at, "environments.%s: a template's name is a Docker name followed by -*, as in dev-*", name)
	}
	for _, other := range sortedKeys(v.f.Environments) {
		if other != name && stages.IsTemplate(other) && strings.HasPrefix(strings.TrimSuffix(other, "*"), prefix) {
			v.errorf(at, "environments.%s: the names of %s's instances are %s's too: give the templates prefixes that do not start one another", name, other, name)
		}
	}
	switch {
	case e.From == "":
		v.errorf(at, "environments.%s.from: required: an instance runs the stages of the template's from environment, and the release it runs for every service no --ref names", name)
	case stages.IsTemplate(e.From):
		v.errorf(append(at, "from"), "environments.%s.from: %s is a template, which runs nothing", name, e.From)
	}
	if e.Network != "" {
		v.errorf(append(at, "network"), "environments.%s.network: each instance gets a network of its own, release-PIPELINE-NAME; a template cannot name one", name)
	}
	if e.Approval != "" {
		v.errorf(append(at, "approval"), "environments.%s.approval: an instance is a branch environment, deployed by release deploy without an approval gate", name)
	}
	if e.Target == "swarm" || e.Swarm {
		v.errorf(append(at, "target"), "environments.%s: a template's instances run on plain Docker hosts (target: docker); swarm is not supported for them", name)
	}
	if e.Expire < 0 {
		v.errorf(append(at, "expire"), "environments.%s.expire: must not be negative", name)
	}
	for _, svc := range sortedKeys(e.Services) {
		if e.Services[svc].Publish != "" {
			v.errorf(append(at, "services", svc, "publish"), "environments.%s.services.%s.publish: every instance would bind the same host port; put the service behind the proxy with a listen range instead", name, svc)
		}
	}
	if e.Proxy != nil {
		for _, svc := range sortedKeys(e.Proxy.Listen) {
			if _, err := stages.ParseListenRange(e.Proxy.Listen[svc]); err != nil {
				v.errorf(append(at, "proxy", "listen", svc), "environments.%s.proxy.listen.%s: %v", name, svc, err)
			}
		}
	}
}

func (v *validator) stages() {
	if len(v.f.Stages) == 0 {
		v.errorf([]string{"stages"}, "stages: at least one stage is required")
		return
	}
	for _, name := range sortedKeys(v.f.Stages) {
		def := v.f.Stages[name]
		at := []string{"stages", name}
		if strings.ContainsAny(name, "[]") || name == "" {
			v.errorf(at, "stages.%s: a stage name cannot contain [ or ]", name)
		}
		st := &Stage{
			Name:        name,
			Uses:        def.Uses,
			ForEach:     def.ForEach,
			Needs:       def.Needs,
			Environment: def.Environment,
			Retry:       def.Retry,
			Timeout:     def.Timeout,
			Pos:         v.d.posOf(at...),
		}
		v.p.Stages[name] = st
		switch def.ForEach {
		case "", "service":
		default:
			v.errorf(append(at, "for_each"), "stages.%s.for_each: %q is not \"service\"", name, def.ForEach)
		}
		if _, ok := v.p.Spec.Templates[def.Environment]; ok {
			msg := "stages.%s.environment: %s is a template, which has no stages: its instances run those of its from environment"
			if from := v.p.Spec.Templates[def.Environment].From; from != "" {
				msg += " (" + from + ")"
			}
			v.errorf(append(at, "environment"), msg, name, def.Environment)
		} else if def.Environment != "" {
			if _, ok := v.p.Spec.Environments[def.Environment]; !ok {
				v.errorf(append(at, "environment"), "stages.%s.environment: unknown environment %q (known: %s)", name, def.Environment, known(v.p.Spec.Environments))
			}
		}
		for i, need := range def.Needs {
			if _, ok := v.f.Stages[need]; !ok {
				v.errorf(append(at, "needs", fmt.Sprint(i)), "stages.%s.needs: unknown stage %q (known: %s)", name, need, known(v.f.Stages))
			}
		}
		if def.Retry.Attempts < 0 {
			v.errorf(append(at, "retry", "attempts"), "stages.%s.retry.attempts: must not be negative", name)
		}
		if def.Uses == "" {
			v.errorf(at, "stages.%s.uses: required", name)
			continue
		}
		kind, err := v.reg.Lookup(def.Uses)
		if err != nil {
			v.errorf(append(at, "uses"), "stages.%s.uses: %v", name, err)
			continue
		}
		st.Impl = kind.New()
		if def.With.Kind != 0 {
			v.d.decode(&def.With, reflect.ValueOf(st.Impl).Elem(), "stages."+name+".with")
		}
		if val, ok := st.Impl.(stages.Validator); ok {
			if err := val.Validate(v.p.Spec); err != nil {
				v.errorf(append(at, "with"), "stages.%s: %v", name, err)
			}
		}
	}
	names := sortedKeys(v.f.Stages)
	if c := dag.FindCycle(names, func(n string) []string { return v.f.Stages[n].Needs }); c != nil {
		v.errorf([]string{"stages", c[0], "needs"}, "stages: needs cycle: %s", strings.Join(c, " → "))
		return
	}
	v.gates()
}

// GateName is the approval node the loader adds in front of the stages of
// an environment with `approval: required`.
func GateName(env string) string { return "approve-" + env }

// gates puts an approval gate in front of every environment that requires
// one: the gate needs what the environment's first stages need from
// outside it, and every stage of the environment needs the gate. A promote
// of the environment starts with the gate; so does a full run, once the
// stages before the environment are done.
func (v *validator) gates() {
	for _, env := range sortedKeys(v.p.Spec.Environments) {
		if v.p.Spec.Environments[env].Approval != "required" {
			continue
		}
		var members []*Stage
		for _, name := range sortedKeys(v.p.Stages) {
			if st := v.p.Stages[name]; st.Environment == env {
				members = append(members, st)
			}
		}
		if len(members) == 0 {
			continue
		}
		at := []string{"environments", env, "approval"}
		name := GateName(env)
		if _, taken := v.p.Stages[name]; taken {
			v.errorf(at, "environments.%s.approval: the gate stage %q it adds is already a stage name", env, name)
			continue
		}
		kind, err := v.reg.Lookup("approval")
		if err != nil {
			v.errorf(at, "environments.%s.approval: %v", env, err)
			continue
		}
		gate := &Stage{Name: name, Uses: "approval", Environment: env, Impl: kind.New(), Pos: v.d.posOf(at...)}
		for _, st := range members {
			inside := false
			for _, need := range st.Needs {
				// A need that names no stage is reported by itself.
				if up := v.p.Stages[need]; up != nil && up.Environment == env {
					inside = true
				}
			}
			if !inside {
				gate.Needs = append(gate.Needs, st.Needs...)
			}
			st.Needs = append(slices.Clone(st.Needs), name)
		}
		slices.Sort(gate.Needs)
		gate.Needs = slices.Compact(gate.Needs)
		v.p.Stages[name] = gate
	}
	names := sortedKeys(v.p.Stages)
	if c := dag.FindCycle(names, func(n string) []string { return v.p.Stages[n].Needs }); c != nil {
		v.errorf([]string{"stages", c[0], "needs"}, "stages: needs cycle through an approval gate: %s", strings.Join(c, " → "))
	}
}

func (v *validator) schedules() {
	for _, name := range sortedKeys(v.f.Schedules) {
		s := v.f.Schedules[name]
		at := []string{"schedules", name}
		if s.Cron == "" {
			v.errorf(at, "schedules.%s.cron: required", name)
		} else if err := checkCron(s.Cron); err != nil {
			v.errorf(append(at, "cron"), "schedules.%s.cron: %v", name, err)
		}
		if s.Bump != "" && !slices.Contains(Bumps, s.Bump) {
			v.errorf(append(at, "bump"), "schedules.%s.bump: %q is not one of %s", name, s.Bump, strings.Join(Bumps, ", "))
		}
		if s.TimeZone != "" {
			if _, err := time.LoadLocation(s.TimeZone); err != nil {
				v.errorf(append(at, "time_zone"), "schedules.%s.time_zone: unknown time zone %q", name, s.TimeZone)
			}
		}
	}
}

func known[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(sortedKeys(m), ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
