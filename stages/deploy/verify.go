package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
	"github.com/sweepboard/release/stages/internal/dockerhost"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Verify is the `verify:` of a deploy stage: checks of the environment
// once every service is switched to the new release, repeated for Bake.
//
//  1. Before the rollout, the stage notes what runs (per service its
//     digest and the version that started it), in the node's progress
//     too, so that a resume goes back to the same release.
//  2. After the switch, each job runs once (as a before: job does, named
//     verify[N]); then every HTTP check probes every running container of
//     its service at once, every VerifyInterval, until Bake has passed
//     since the switch (once with no bake).
//  3. The first check that fails stops the checks: the environment is
//     deployed again with the digests noted in 1, and the environment
//     variables their containers had, through the same target,
//     start-first, and the stage fails naming the check. The engine
//     records both in the environment's history: the release that failed
//     and the rollback (stages.RolledBack).
//
// An HTTP check probes each container through the port the engine
// published for it, where the deploy's health check reaches it: the
// containers that answer to http://SERVICE:PORT on the environment
// network, each one, without release being on that network.
type Verify struct {
	HTTP []HTTPCheck   `yaml:"http"`
	Jobs []Job         `yaml:"jobs"`
	Bake time.Duration `yaml:"bake"`
}

// HTTPCheck is a GET of Path from each container of Service, which must
// answer Status (default 200).
type HTTPCheck struct {
	Service string `yaml:"service"`
	Path    string `yaml:"path"`
	Status  int    `yaml:"status"`
}

// VerifyInterval is the wait between two rounds of HTTP checks.
const VerifyInterval = time.Second

func (c HTTPCheck) status() int {
	if c.Status == 0 {
		return http.StatusOK
	}
	return c.Status
}

// String names the check in errors: "web GET /healthz".
func (c HTTPCheck) String() string { return c.Service + " GET " + c.Path }

func (v *Verify) validate(spec *stages.Spec) error {
	if v.Bake < 0 {
		return fmt.Errorf("with.verify.bake: negative duration %s", v.Bake)
	}
	if len(v.HTTP) == 0 && len(v.Jobs) == 0 {
		return errors.New("with.verify: no checks: give http, jobs or both")
	}
	for i, c := range v.HTTP {
		at := fmt.Sprintf("with.verify.http[%d].", i)
		if c.Service == "" {
			return fmt.Errorf("%sservice: required: the service whose containers answer the check", at)
		}
		if spec != nil {
			svc, ok := spec.Services[c.Service]
			if !ok {
				return fmt.Errorf("%sservice: unknown service %q (known: %s)", at, c.Service, strings.Join(spec.ServiceNames(), ", "))
			}
			if svc.Port == 0 {
				return fmt.Errorf("%sservice: %s has no port to probe", at, c.Service)
			}
		}
		if !strings.HasPrefix(c.Path, "/") {
			return fmt.Errorf("%spath: %q: want a path starting with /", at, c.Path)
		}
		if c.Status != 0 && (c.Status < 100 || c.Status > 599) {
			return fmt.Errorf("%sstatus: %d is no HTTP status", at, c.Status)
		}
	}
	for i, j := range v.Jobs {
		if err := j.validate(spec, fmt.Sprintf("with.verify.jobs[%d].", i)); err != nil {
			return err
		}
	}
	return nil
}

// previous is what ran in the environment before the rollout, by service.
type previous struct {
	images   map[string]string
	versions map[string]string
	// env is the environment of a container that ran each service, as
	// its host reports it (the image's variables and the container's):
	// a rollback restores it, so that a release that changed only the
	// file's env: goes back too. It is kept in memory only, never in the
	// progress (it may hold env_from secrets): a resumed attempt rolls
	// back with the file's configuration.
	env map[string][]string
}

// The progress keys of previous: previous[SERVICE] is its digest,
// previousVersion[SERVICE] the version that started it.
func prevKey(service string) string    { return "previous[" + service + "]" }
func prevVerKey(service string) string { return "previousVersion[" + service + "]" }

// previous notes what runs now: from the node's progress when an earlier
// attempt noted it (the environment may run the new release by now),
// else from the target, recorded in the progress.
func (d *deployer) previous(ctx context.Context) (*previous, error) {
	p := &previous{images: map[string]string{}, versions: map[string]string{}, env: map[string][]string{}}
	names := d.env.Spec.ServiceNames()
	for _, name := range names {
		if img := d.env.Prior[prevKey(name)]; img != "" {
			p.images[name], p.versions[name] = img, d.env.Prior[prevVerKey(name)]
		}
	}
	if len(p.images) > 0 || d.env.Prior["previousNone"] == "true" {
		return p, nil
	}
	var lives []target.Live
	for _, l := range d.target.Inspect(ctx) {
		if l.Container == "" || l.State != "running" || l.Digest == "" || p.images[l.Service] != "" {
			continue
		}
		p.images[l.Service], p.versions[l.Service] = l.Digest, l.Version
		lives = append(lives, l)
	}
	d.previousEnv(ctx, p, lives)
	out := stages.Outputs{}
	for name, img := range p.images {
		out[prevKey(name)], out[prevVerKey(name)] = img, p.versions[name]
	}
	if len(out) == 0 {
		out["previousNone"] = "true"
	}
	if d.env.Checkpoint != nil {
		if err := d.env.Checkpoint(ctx, out); err != nil {
			return nil, fmt.Errorf("deploy to %s: record what runs before the rollout: %w", d.env.Environment, err)
		}
	}
	return p, nil
}

// previousEnv notes the environment of one running container of each
// service in lives. A container it cannot inspect leaves its service
// without one: the rollback takes the file's configuration then.
func (d *deployer) previousEnv(ctx context.Context, p *previous, lives []target.Live) {
	hosts := map[string]*dockerhost.Host{}
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	for _, l := range lives {
		if l.ID == "" || l.Host == "" {
			continue
		}
		h := hosts[l.Host]
		if h == nil {
			var err error
			if h, err = dockerhost.Open(l.Host, engine.Bounds(d.env.Spec.Timeouts)); err != nil {
				d.logf("note the configuration of %s before the rollout: %v", l.Service, err)
				continue
			}
			hosts[l.Host] = h
		}
		st, err := h.State(ctx, l.ID, 0)
		if err != nil {
			d.logf("note the configuration of %s before the rollout: %v", l.Service, err)
			continue
		}
		p.env[l.Service] = slices.Clone(st.Env)
	}
}

// verify runs the checks of v (see Verify); the error names the check
// that failed.
func (d *deployer) verify(ctx context.Context, v *Verify) error {
	end := time.Now().Add(v.Bake)
	for i, j := range v.Jobs {
		if err := d.job(ctx, fmt.Sprintf("verify[%d]", i), j); err != nil {
			return fmt.Errorf("verify job %d of %s %s: %w", i, j.Service, strings.Join(j.Command, " "), err)
		}
	}
	if len(v.HTTP) == 0 {
		return nil
	}
	hosts := map[string]*dockerhost.Host{}
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	for round := 1; ; round++ {
		for _, c := range v.HTTP {
			n, err := d.probe(ctx, hosts, c)
			if err != nil {
				return fmt.Errorf("verify %s: %w", c, err)
			}
			if round == 1 {
				d.logf("verify %s: %d answered %d", c, n, c.status())
			}
		}
		if !time.Now().Before(end) {
			d.logf("verify: every check passed, %d rounds in %s", round, v.Bake)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(VerifyInterval, time.Until(end))):
		}
	}
}

var verifyClient = &http.Client{
	Timeout:       5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true},
}

// probe runs one HTTP check against every running container of the new
// release of its service, on every host that runs the service, and says
// how many answered.
func (d *deployer) probe(ctx context.Context, hosts map[string]*dockerhost.Host, c HTTPCheck) (int, error) {
	cfg := d.env.Spec.ServiceIn(d.env.Environment, c.Service)
	n := 0
	for _, addr := range cfg.Hosts {
		h := hosts[addr]
		if h == nil {
			var err error
			if h, err = dockerhost.Open(addr, engine.Bounds(d.env.Spec.Timeouts)); err != nil {
				return n, err
			}
			hosts[addr] = h
		}
		list, err := h.List(ctx, map[string]string{LabelPipeline: d.pipeline, LabelEnvironment: d.env.Environment, LabelService: c.Service})
		if err != nil {
			return n, err
		}
		list = slices.DeleteFunc(list, func(x dockerhost.Container) bool {
			return target.IsJob(x.Labels) || x.Labels[LabelDigest] != d.images[c.Service]
		})
		for _, x := range list {
			st, err := h.State(ctx, x.ID, cfg.Service.Port)
			if err != nil {
				return n, err
			}
			if !st.Running {
				continue
			}
			if st.HostPort == "" {
				return n, fmt.Errorf("container %s on %s: port %d not published", x.Name, addr, cfg.Service.Port)
			}
			url := "http://" + net.JoinHostPort(h.DialIP(), st.HostPort) + c.Path
			if err := get(ctx, url, c.status()); err != nil {
				return n, fmt.Errorf("container %s on %s: %w", x.Name, addr, err)
			}
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no running container of %s at %s", c.Service, d.images[c.Service])
	}
	return n, nil
}

// get GETs url and wants status.
func get(ctx context.Context, url string, status int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := verifyClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		msg := fmt.Sprintf("answered %s, want %d", resp.Status, status)
		if b := strings.TrimSpace(string(body)); b != "" {
			msg += ": " + b
		}
		return errors.New(msg)
	}
	return nil
}

// rollback deploys again what ran before the rollout, after the check
// that failed with cause, and returns the stage's error.
func (d *deployer) rollback(ctx context.Context, prev *previous, cause error) error {
	env := d.env.Environment
	if prev == nil || len(prev.images) == 0 {
		return stages.Permanent(fmt.Errorf("deploy to %s: %w; nothing ran there before this deploy: the new release keeps running", env, cause))
	}
	d.logf("%v: rolling back to what ran before", cause)
	images := map[string]string{}
	var mu sync.Mutex
	wantOf := func(name string) (target.Service, error) {
		s, err := d.want(name)
		if err != nil {
			return s, err
		}
		img := prev.images[name]
		mu.Lock()
		defer mu.Unlock()
		if img == "" {
			// A service new with this release has nothing to go back to.
			images[name] = s.Image
			return s, nil
		}
		images[name] = img
		vars := prev.env[name]
		if vars == nil {
			var err error
			if vars, _, err = containerEnv(s.Config, env, prev.versions[name], d.stage.lookupEnv); err != nil {
				return s, err
			}
		}
		s.Image, s.Env = img, vars
		s.Labels[LabelDigest], s.Labels[LabelVersion] = img, prev.versions[name]
		s.Hash = configHash(s, d.env.Spec.NetworkName(env))
		s.Labels[LabelConfig] = s.Hash
		return s, nil
	}
	if err := d.rollout(ctx, wantOf, stages.Outputs{}); err != nil {
		return fmt.Errorf("deploy to %s: %w; rolling back: %w", env, cause, err)
	}
	version := ""
	for _, name := range d.env.Spec.ServiceNames() {
		if v := prev.versions[name]; v != "" {
			version = v
			break
		}
	}
	d.logf("rolled back to %s", orNone(version))
	return stages.Permanent(&stages.RolledBack{
		Version: version,
		Images:  images,
		Err:     fmt.Errorf("deploy to %s: %w; rolled back to %s", env, cause, orNone(version)),
	})
}

func orNone(version string) string {
	if version == "" {
		return "the release that ran before"
	}
	return version
}
