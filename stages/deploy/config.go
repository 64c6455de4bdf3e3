package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
)

// Labels put on every container a deploy starts. They are how a later deploy
// or `release status` finds the containers of a pipeline's environment.
const (
	LabelPipeline    = target.LabelPipeline
	LabelEnvironment = target.LabelEnvironment
	LabelService     = target.LabelService
	LabelVersion     = target.LabelVersion
	LabelDigest      = target.LabelDigest
	LabelRunID       = target.LabelRunID
	LabelConfig      = target.LabelConfig
)

// Variables every container gets, for the release it runs.
const (
	EnvVersion     = "RELEASE_VERSION"     // the release version; absent for a build that is not a release
	EnvEnvironment = "RELEASE_ENVIRONMENT" // the environment's name
)

// want is a service as this deploy wants it in its environment.
//
// A service that runs its intended image everywhere at one version, with
// the configuration this deploy would give it under that version, keeps
// its containers and their RELEASE_VERSION: a release that did not change
// a service (the same digest, the same settings) does not restart it. The
// version a container carries is then the release that first deployed
// what it runs, which `release status` and the history tell apart from
// the release the environment is at.
func (d *deployer) want(name string) (target.Service, error) {
	if running, ok := d.running(name); ok && running.version != d.env.Version {
		s, err := d.wantAt(name, running.version)
		if err != nil || s.Hash == running.config || d.env.Version == "" {
			return s, err
		}
	}
	return d.wantAt(name, d.env.Version)
}

// wantAt is a service as this deploy wants it, its containers carrying
// version.
func (d *deployer) wantAt(name, version string) (target.Service, error) {
	cfg := d.env.Spec.ServiceIn(d.env.Environment, name)
	env, secrets, err := containerEnv(cfg, d.env.Environment, version, d.stage.lookupEnv)
	if err != nil {
		return target.Service{}, err
	}
	d.addSecrets(secrets)
	s := target.Service{
		Name:        name,
		Config:      cfg,
		Image:       d.images[name],
		Env:         env,
		StopTimeout: d.stage.stopTimeout(),
	}
	s.Hash = configHash(s, d.env.Spec.NetworkName(d.env.Environment))
	s.Labels = map[string]string{
		LabelPipeline:    d.pipeline,
		LabelEnvironment: d.env.Environment,
		LabelService:     name,
		LabelVersion:     version,
		LabelDigest:      s.Image,
		LabelRunID:       d.env.RunID,
		LabelConfig:      s.Hash,
	}
	return s, nil
}

// running is what the running containers of a service share, when they run
// its intended image everywhere at one version with one configuration. It
// reads what runs once per deploy; a target that does not answer in time
// leaves nothing shared, and the services are replaced.
func (d *deployer) running(service string) (runningService, bool) {
	d.inspect()
	r, ok := d.live.services[service]
	return r, ok
}

// allServing says whether every one of services has a healthy running
// container in the environment, as the deploy found it.
func (d *deployer) allServing(services []string) bool {
	d.inspect()
	for _, s := range services {
		if !d.live.serving[s] {
			return false
		}
	}
	return true
}

// inspect reads what the environment runs, once per deploy.
func (d *deployer) inspect() {
	d.live.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		lives := d.target.Inspect(ctx)
		d.live.services = runningServices(lives, d.images)
		d.live.serving = map[string]bool{}
		for _, l := range lives {
			if l.Container != "" && l.State == "running" && l.Healthy {
				d.live.serving[l.Service] = true
			}
		}
	})
}

// liveServices is what a deploy learnt of its environment's running
// services, once.
type liveServices struct {
	once     sync.Once
	services map[string]runningService
	serving  map[string]bool // a healthy container of the service runs
}

// runningService is the version and configuration hash that every running
// container of a service carries.
type runningService struct {
	version, config string
}

// runningServices are the services whose running containers all run their
// intended image at one version with one configuration hash.
func runningServices(lives []target.Live, images map[string]string) map[string]runningService {
	services := map[string]runningService{}
	mixed := map[string]bool{}
	for _, l := range lives {
		if l.Container == "" || l.State != "running" || l.Digest != images[l.Service] {
			continue
		}
		r := runningService{version: l.Version, config: l.Config}
		if seen, ok := services[l.Service]; ok && seen != r {
			mixed[l.Service] = true
		}
		services[l.Service] = r
	}
	for s := range mixed {
		delete(services, s)
	}
	return services
}

// containerEnv is a service's environment in a container, NAME=VALUE and
// sorted by name, each name once. Later sources win:
//
//  1. the env_file files (the service's, then the environment's), read now;
//  2. env, the environment's over the service's;
//  3. env_from: variables of this process, by name (secrets);
//  4. RELEASE_VERSION (when there is a version) and RELEASE_ENVIRONMENT.
//
// secrets are the env_from values, for the log to hide. An error names
// the file and line or the variable, never a value.
func containerEnv(cfg stages.ServiceConfig, environment, version string, lookup func(string) (string, bool)) (env, secrets []string, err error) {
	vars := map[string]string{}
	for _, f := range cfg.EnvFiles {
		if err := readEnvFile(f, vars); err != nil {
			return nil, nil, err
		}
	}
	maps.Copy(vars, cfg.Env)
	for _, name := range cfg.EnvFrom {
		v, ok := lookup(name)
		if !ok {
			return nil, nil, fmt.Errorf("env_from: variable %s is not set", name)
		}
		vars[name] = v
		if v != "" {
			secrets = append(secrets, v)
		}
	}
	if version != "" {
		vars[EnvVersion] = version
	}
	vars[EnvEnvironment] = environment
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return env, secrets, nil
}

// readEnvFile reads NAME=VALUE lines into vars, as docker run --env-file
// does: blank lines and lines starting with # are skipped, the value is
// taken as it is (no quotes removed, no expansion).
func readEnvFile(path string, vars map[string]string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("env_file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !validName(name) {
			// The line may hold a secret: only its place is named.
			return fmt.Errorf("env_file %s:%d: not NAME=VALUE", path, n)
		}
		vars[name] = value
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("env_file %s: %w", path, err)
	}
	return nil
}

// validName is a variable name: letters, digits and _, not starting with
// a digit.
func validName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// configHash identifies what makes two containers of a service the same:
// a running one with the same hash (and, as the engine reports, the same
// image and environment) is adopted instead of replaced. Labels that only
// say where a container came from (version, run) do not count; the
// version does through RELEASE_VERSION. Only 48 bits of the hash are
// kept, in a label: the env_from values it covers cannot be read back.
func configHash(s target.Service, network string) string {
	c := s.Config
	b, _ := json.Marshal(struct {
		Image    string
		Env      []string
		Port     int
		Volumes  []string
		Health   stages.Health
		Publish  string
		Restart  string
		Memory   int64
		CPUs     float64
		Replicas int
		Network  string
	}{s.Image, s.Env, s.Port(), c.Service.Volumes, c.Service.Health, c.Publish, c.Restart, c.Memory, c.CPUs, c.Replicas, network})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
