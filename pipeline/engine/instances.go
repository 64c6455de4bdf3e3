package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// Environments per branch. An environment of the file whose name ends in
// "-*" (dev-*) is a template; `release deploy dev-login --ref …` makes the
// instance dev-login of it on its first deployment:
//
//  1. The name is checked (what follows the prefix is a Docker name) and
//     the refs are resolved, before anything is made.
//  2. Every service no --ref names, now or in an earlier deployment of the
//     instance, runs the newest release the template's from environment
//     ran, by digest; a service an earlier --ref built keeps that build.
//  3. The instance is recorded once, with a Caddy listen address per
//     service of the template's proxy.listen: the first port of the
//     template's range HOST:LOW-HIGH that no instance of the store, no
//     environment of the file and no other Caddy server holds, and that
//     nothing on this machine listens on. The store's key makes two
//     instances taking one address at once impossible.
//  4. The deployment runs the stages of no environment and those of the
//     template's from environment, acting in the instance (its approval
//     gate left out): its own network release-PIPELINE-NAME, its own
//     container names, its own Caddy servers.
//
// RemoveEnvironment (release env rm) takes all of it away again, and
// PruneEnvironments (release env prune) does so for the instances whose
// branches are gone or that expired.

// Resources is the outside world's side of environments per branch: which
// proxy addresses are in use, and taking away what deployments made in an
// environment. cmd/release wires it to the deploy stage's Docker and Caddy
// clients.
type Resources interface {
	// Listening are the addresses the Caddy at admin serves on for any
	// server but environment's own.
	Listening(ctx context.Context, spec *stages.Spec, admin, environment string) ([]string, error)
	// Bound says whether something on this machine listens on addr.
	Bound(addr string) bool
	// Remove takes away every container, network and proxy server that
	// deployments made in environment of spec; what is not there is fine.
	Remove(ctx context.Context, spec *stages.Spec, environment string) (Removed, error)
}

// Removed is what RemoveEnvironment took away.
type Removed struct {
	Containers []string `json:"containers"`
	Networks   []string `json:"networks"`
	Routes     []string `json:"routes"` // Caddy servers, by id
}

// BranchGone is Repos that can tell a branch deleted from its remote from
// a remote that does not answer: what prune removes instances for.
type BranchGone interface {
	// Gone says whether ref of repo named a branch the remote no longer
	// has (and no tag or commit); an error when the remote cannot say.
	Gone(ctx context.Context, repo, ref string) (bool, error)
}

// templateOf says which template an environment name is an instance of.
func (e *Engine) templateOf(name string) (string, bool) {
	return e.Pipeline.Spec.TemplateOf(name)
}

// checkInstanceTarget refuses a deployment to name when it is a template
// or an instance name no template allows; tpl is "" for an environment of
// the file.
func (e *Engine) checkInstanceTarget(verb, name string) (tpl string, err error) {
	spec := e.Pipeline.Spec
	if _, ok := spec.Templates[name]; ok {
		return "", usagef("%s %s: %s is a template, which is never deployed itself: deploy an instance of it, as in release deploy %s --ref REPO=BRANCH", verb, name, name, strings.TrimSuffix(name, "*")+"login")
	}
	if _, ok := spec.Environments[name]; ok {
		return "", nil
	}
	tpl, ok := e.templateOf(name)
	if !ok {
		return "", e.knownEnvironment(name)
	}
	if err := stages.CheckInstanceName(name, tpl); err != nil {
		return "", usagef("%s %s: %v", verb, name, err)
	}
	return tpl, nil
}

// branchEnvironment refuses verb (promote, rollback) of a template or an
// instance of one: they get branches from release deploy, never releases.
func (e *Engine) branchEnvironment(verb, name string) error {
	if _, ok := e.Pipeline.Spec.Templates[name]; ok {
		return usagef("%s %s: %s is a template, which runs nothing and is never promoted to: its instances are deployed with release deploy", verb, name, name)
	}
	if tpl, ok := e.templateOf(name); ok {
		return usagef("%s %s: %s is an instance of template %s, an environment per branch: it is deployed with release deploy, never promoted to or rolled back", verb, name, name, tpl)
	}
	return nil
}

// instancePipeline is the pipeline as a deployment to instance in sees it:
// the instance among the environments, and the stages of the template's
// from environment (but its approval gate) acting in the instance.
func instancePipeline(p *pipeline.Pipeline, in *pipeline.Instance) *pipeline.Pipeline {
	from := p.Spec.Templates[in.Template].From
	cp := *p
	cp.Spec = p.Spec.WithInstance(in.Name, in.Template, in.Listen)
	cp.Stages = make(map[string]*pipeline.Stage, len(p.Stages))
	for name, st := range p.Stages {
		if st.Environment == from && st.Uses != "approval" {
			retargeted := *st
			retargeted.Environment = in.Name
			st = &retargeted
		}
		cp.Stages[name] = st
	}
	return &cp
}

// instanceOf reads the record of instance name; nil when there is none.
func (e *Engine) instanceOf(ctx context.Context, name string) (*pipeline.Instance, error) {
	in, err := e.Store.Instance(ctx, e.Pipeline.Spec.Name, name)
	if errors.Is(err, pipeline.ErrNotFound) {
		return nil, nil
	}
	return in, err
}

// built is what the deployments of an instance built from refs, newest
// first wins: the ref and commit of each repo, the image of each service,
// and when it was last deployed.
type built struct {
	refs, commits, images map[string]string
	last                  time.Time
}

func (e *Engine) builtIn(ctx context.Context, in *pipeline.Instance) (built, error) {
	b := built{refs: map[string]string{}, commits: map[string]string{}, images: map[string]string{}}
	hist, err := e.Store.Deployments(ctx, in.Name, 0)
	if err != nil {
		return b, err
	}
	spec := e.Pipeline.Spec
	for _, d := range hist {
		if d.At.Before(in.CreatedAt) {
			break // an instance of that name removed before
		}
		if b.last.IsZero() {
			b.last = d.At
		}
		for _, repo := range slices.Sorted(maps.Keys(d.Refs)) {
			if _, seen := b.refs[repo]; seen {
				continue
			}
			b.refs[repo], b.commits[repo] = d.Refs[repo], d.Commits[repo]
			for _, svc := range spec.ServiceNames() {
				if spec.Services[svc].Repo == repo && d.Images[svc] != "" {
					b.images[svc] = d.Images[svc]
				}
			}
		}
	}
	return b, nil
}

// instanceBase is what a deployment to an instance starts from: the
// newest release the template's from environment ran, and over it what
// earlier deployments of the instance built from refs.
func (e *Engine) instanceBase(ctx context.Context, name, tpl string) (images, commits map[string]string, what string, err error) {
	from := e.Pipeline.Spec.Templates[tpl].From
	images, commits = map[string]string{}, map[string]string{}
	hist, err := e.Store.Deployments(ctx, from, 0)
	if err != nil {
		return nil, nil, "", err
	}
	for _, d := range hist {
		if d.Branch() || d.Version == "" {
			continue
		}
		maps.Copy(images, d.Images)
		rel, err := e.recordedRelease(ctx, d.Version)
		if err != nil {
			return nil, nil, "", err
		}
		if rel != nil {
			maps.Copy(commits, rel.Commits)
		}
		what = d.Version
		break
	}
	in, err := e.instanceOf(ctx, name)
	if err != nil || in == nil {
		return images, commits, what, err
	}
	b, err := e.builtIn(ctx, in)
	if err != nil {
		return nil, nil, "", err
	}
	maps.Copy(images, b.images)
	maps.Copy(commits, b.commits)
	return images, commits, what, nil
}

// prepareInstance is what a deployment to instance name of tpl starts
// from (instanceBase), checked, and the instance's record, made on its
// first deployment. It holds the instance's lock meanwhile, and gives it
// back for the run to take: a removal of the instance (env rm) running
// now is waited for, and the instance is then made anew, never deployed
// with the addresses the removal freed.
func (e *Engine) prepareInstance(ctx context.Context, name, tpl string, built []string, wait bool) (images, commits map[string]string, now string, in *pipeline.Instance, err error) {
	l, err := e.lockInstance(ctx, name, wait, deployRun)
	if err != nil {
		return nil, nil, "", nil, err
	}
	defer e.unlock(ctx, l)
	if images, commits, now, err = e.instanceBase(ctx, name, tpl); err != nil {
		return nil, nil, "", nil, err
	}
	from := e.Pipeline.Spec.Templates[tpl].From
	if err := e.keeping(ctx, name, images, built, func(missing string) error {
		return refusedf("deploy %s: %s, the from environment of template %s, has run no release, so %s would run nothing of %s: release to %s first, or give those repos a --ref too", name, from, tpl, name, missing, from)
	}); err != nil {
		return nil, nil, "", nil, err
	}
	in, err = e.makeInstance(ctx, name, tpl)
	return images, commits, now, in, err
}

func (e *Engine) unlock(ctx context.Context, l *pipeline.Lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pipeline.DefaultGrace)
	defer cancel()
	_ = e.Store.ReleaseLease(rctx, l)
}

// makeInstance records instance name of tpl, picking its listen addresses,
// or reads it back when it is recorded already.
func (e *Engine) makeInstance(ctx context.Context, name, tpl string) (*pipeline.Instance, error) {
	spec := e.Pipeline.Spec
	t := spec.Templates[tpl]
	if in, err := e.instanceOf(ctx, name); err != nil || in != nil {
		return in, err
	}
	used := map[string]bool{}
	for _, env := range spec.Environments {
		if env.Proxy != nil {
			for _, a := range env.Proxy.Listen {
				used[a] = true
			}
		}
	}
	if t.Proxy != nil && len(t.Proxy.Listen) > 0 && e.Resources != nil && t.Proxy.Caddy != "" {
		held, err := e.Resources.Listening(ctx, spec, t.Proxy.Caddy, name)
		if err != nil {
			return nil, fmt.Errorf("environment %s: read the addresses Caddy serves: %w", name, err)
		}
		for _, a := range held {
			used[a] = true
		}
	}
	return e.Store.CreateInstance(ctx, spec.Name, name, tpl, func(taken []string) (map[string]string, error) {
		listen := map[string]string{}
		if t.Proxy == nil {
			return listen, nil
		}
		busy := maps.Clone(used)
		for _, a := range taken {
			busy[a] = true
		}
		for _, svc := range slices.Sorted(maps.Keys(t.Proxy.Listen)) {
			r, err := stages.ParseListenRange(t.Proxy.Listen[svc])
			if err != nil {
				return nil, err // the loader refused it already
			}
			for port := r.Low; port <= r.High && listen[svc] == ""; port++ {
				a := r.Addr(port)
				if busy[a] || (e.Resources != nil && e.Resources.Bound(a)) {
					continue
				}
				listen[svc], busy[a] = a, true
			}
			if listen[svc] == "" {
				return nil, refusedf("environment %s: every port of %s (environments.%s.proxy.listen.%s) is held by another environment or server: widen the range, or remove an instance (release env rm)", name, t.Proxy.Listen[svc], tpl, svc)
			}
		}
		return listen, nil
	})
}

// EnvironmentInstance is one instance as release env list shows it.
type EnvironmentInstance struct {
	Name     string            `json:"name"`
	Template string            `json:"template"`
	Refs     map[string]string `json:"refs"`
	Commits  map[string]string `json:"commits"`
	// DeployedAt is when it was last deployed; nil when its first
	// deployment has not finished.
	DeployedAt *time.Time        `json:"deployedAt"`
	CreatedAt  time.Time         `json:"createdAt"`
	Network    string            `json:"network"`
	Listen     map[string]string `json:"listen"`
	// Expires is when release env prune removes it unless it is deployed
	// again; nil when its template has no expire.
	Expires *time.Time `json:"expires"`
}

// Instances lists the instances of the pipeline's templates, by name.
func (e *Engine) Instances(ctx context.Context) ([]EnvironmentInstance, error) {
	list, err := e.Store.Instances(ctx, e.Pipeline.Spec.Name)
	if err != nil {
		return nil, err
	}
	out := []EnvironmentInstance{}
	for _, in := range list {
		b, err := e.builtIn(ctx, in)
		if err != nil {
			return nil, err
		}
		v := EnvironmentInstance{
			Name: in.Name, Template: in.Template, Refs: b.refs, Commits: b.commits, CreatedAt: in.CreatedAt,
			Network: e.Pipeline.Spec.NetworkName(in.Name), Listen: orEmpty(in.Listen),
		}
		if !b.last.IsZero() {
			v.DeployedAt = &b.last
		}
		if exp := e.Pipeline.Spec.Templates[in.Template].Expire; exp > 0 {
			at := in.CreatedAt
			if !b.last.IsZero() {
				at = b.last
			}
			at = at.Add(exp)
			v.Expires = &at
		}
		out = append(out, v)
	}
	return out, nil
}

// RemoveRequest removes an instance.
type RemoveRequest struct {
	Name string
	// Wait waits for a deployment of the instance that holds it instead
	// of a *pipeline.HeldError.
	Wait bool
}

// The run ids the holders of an instance's lock carry outside a run:
// release env rm's, and a deployment's while it records the instance. A
// holder of either is waited for whatever Wait says: it is done in
// seconds.
const (
	rmRun     = "env-rm"
	deployRun = "env-deploy"
)

// RemoveEnvironment takes away an instance: every container, network and
// Caddy server its deployments made, then its record. It holds the
// instance's lock meanwhile, so no deployment of it runs at the same time;
// every step is safe to redo, so a second removal, at once or later,
// finds nothing left and succeeds. gone says there was no record.
func (e *Engine) RemoveEnvironment(ctx context.Context, req RemoveRequest) (removed Removed, gone bool, err error) {
	spec := e.Pipeline.Spec
	name := req.Name
	if _, ok := spec.Templates[name]; ok {
		return removed, false, usagef("env rm %s: %s is a template, not an instance: name an instance of it (release env list)", name, name)
	}
	if _, ok := spec.Environments[name]; ok {
		return removed, false, usagef("env rm %s: %s is an environment of the pipeline file, not an instance of a template: only instances (release env list) are removed", name, name)
	}
	tpl, ok := e.templateOf(name)
	if !ok {
		return removed, false, usagef("env rm %s: no template makes %s (templates: %s)", name, name, known(spec.Templates))
	}
	if err := stages.CheckInstanceName(name, tpl); err != nil {
		return removed, false, usagef("env rm %s: %v", name, err)
	}
	in, err := e.instanceOf(ctx, name)
	if err != nil {
		return removed, false, err
	}
	l, err := e.lockInstance(ctx, name, req.Wait, rmRun)
	if err != nil {
		return removed, false, err
	}
	defer e.unlock(ctx, l)
	listen := map[string]string{}
	if in != nil {
		listen = in.Listen
	}
	if e.Resources != nil && len(spec.Templates[tpl].Hosts) > 0 {
		removed, err = e.Resources.Remove(ctx, spec.WithInstance(name, tpl, listen), name)
		if err != nil {
			return removed, false, fmt.Errorf("env rm %s: %w", name, err)
		}
	}
	if err := e.Store.RemoveInstance(ctx, spec.Name, name); err != nil {
		return removed, false, err
	}
	return removed, in == nil, nil
}

// lockInstance takes the lock a deployment of the instance holds, for
// the holder of run id as.
func (e *Engine) lockInstance(ctx context.Context, name string, wait bool, as string) (*pipeline.Lease, error) {
	owner := pipeline.NewOwner(as)
	ttl := e.LeaseTTL
	if ttl <= 0 {
		ttl = pipeline.DefaultLeaseTTL
	}
	for {
		l, err := e.Store.AcquireLease(ctx, "env/"+name, owner.Holder(), ttl)
		var held *pipeline.HeldError
		if err == nil || !errors.As(err, &held) {
			return l, err
		}
		if by := pipeline.ParseHolder(held.Holder).RunID; !wait && by != rmRun && by != deployRun {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, pipeline.ErrInterrupted
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Pruned is an instance PruneEnvironments removed, and why.
type Pruned struct {
	Name    string  `json:"name"`
	Reason  string  `json:"reason"`
	Removed Removed `json:"removed"`
}

// PruneRequest removes the instances whose branches are gone from their
// remotes or that expired.
type PruneRequest struct {
	DryRun bool // say what would go, remove nothing
	Wait   bool
}

// PruneEnvironments removes every instance that expired (no deployment
// for its template's expire) or all of whose refs are branches its
// remotes no longer have. A remote that does not answer keeps its
// instances: only a remote's own answer removes one.
func (e *Engine) PruneEnvironments(ctx context.Context, req PruneRequest) ([]Pruned, error) {
	list, err := e.Instances(ctx)
	if err != nil {
		return nil, err
	}
	gone, _ := e.Repos.(BranchGone)
	out := []Pruned{}
	var errs []error
	for _, in := range list {
		reason := ""
		if in.Expires != nil && !e.now().Before(*in.Expires) {
			since := in.CreatedAt
			if in.DeployedAt != nil {
				since = *in.DeployedAt
			}
			reason = fmt.Sprintf("expired: not deployed since %s (expire: %s)", since.UTC().Format(time.RFC3339), e.Pipeline.Spec.Templates[in.Template].Expire)
		} else if gone != nil && len(in.Refs) > 0 {
			all := true
			for _, repo := range slices.Sorted(maps.Keys(in.Refs)) {
				g, err := gone.Gone(ctx, repo, in.Refs[repo])
				if err != nil {
					errs = append(errs, fmt.Errorf("env prune %s: %w", in.Name, err))
				}
				if err != nil || !g {
					all = false
					break
				}
			}
			if all {
				reason = "its branches are gone: " + describeRefs(in.Refs, nil)
			}
		}
		if reason == "" {
			continue
		}
		p := Pruned{Name: in.Name, Reason: reason}
		if !req.DryRun {
			if p.Removed, _, err = e.RemoveEnvironment(ctx, RemoveRequest{Name: in.Name, Wait: req.Wait}); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func known[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}
