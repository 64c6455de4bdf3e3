package engine

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
)

// Deployment is one entry of an environment's history, with the images it
// changed.
type Deployment struct {
	Version    string            `json:"version"`
	RunID      string            `json:"runId"`
	Kind       string            `json:"kind"` // run, promote, rollback, deploy
	DeployedAt time.Time         `json:"deployedAt"`
	Images     map[string]string `json:"images"`
	// Refs and Commits are what a branch deployment (kind deploy, no
	// version) built, by repo; absent for a release.
	Refs    map[string]string `json:"refs,omitempty"`
	Commits map[string]string `json:"commits,omitempty"`
	// Changed are the services whose image differs from the entry before
	// (every service, for the first entry).
	Changed []ImageChange `json:"changed"`
}

// ImageChange is a service's image going from one digest to another.
type ImageChange struct {
	Service string `json:"service"`
	From    string `json:"from"` // "" when the service had no image
	To      string `json:"to"`   // "" when it has none any more
}

// History is an environment's deployments, newest first, at most limit of
// them (all when limit is 0).
func (e *Engine) History(ctx context.Context, env string, limit int) ([]Deployment, error) {
	if _, instance := e.templateOf(env); !instance {
		if err := e.knownEnvironment(env); err != nil {
			return nil, err
		}
	}
	if limit < 0 {
		return nil, usagef("--limit %d: want 0 (all) or more", limit)
	}
	n := limit
	if n > 0 {
		n++ // the entry before the oldest shown, to tell what it changed
	}
	hist, err := e.Store.Deployments(ctx, env, n)
	if err != nil {
		return nil, err
	}
	out := []Deployment{}
	for i, d := range hist {
		if limit > 0 && i == limit {
			break
		}
		var before map[string]string
		if i+1 < len(hist) {
			before = hist[i+1].Images
		}
		dep := Deployment{
			Version: d.Version, RunID: d.RunID, Kind: d.Kind, DeployedAt: d.At,
			Images: orEmpty(d.Images), Changed: changes(before, d.Images),
		}
		if d.Branch() {
			dep.Refs, dep.Commits = d.Refs, d.Commits
		}
		out = append(out, dep)
	}
	return out, nil
}

// knownEnvironment refuses a name the pipeline file has no environment of.
func (e *Engine) knownEnvironment(name string) error {
	if _, ok := e.Pipeline.Spec.Environments[name]; !ok {
		return usagef("unknown environment %q (known: %s)", name, strings.Join(e.Pipeline.Spec.EnvironmentOrder(), ", "))
	}
	return nil
}

// changes are the services whose image differs between two sets, by
// service name.
func changes(from, to map[string]string) []ImageChange {
	out := []ImageChange{}
	for _, svc := range slices.Sorted(maps.Keys(union(from, to))) {
		if from[svc] != to[svc] {
			out = append(out, ImageChange{Service: svc, From: from[svc], To: to[svc]})
		}
	}
	return out
}

func union(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// DiffSide is one side of a diff: a version, or what an environment runs.
type DiffSide struct {
	Name        string            `json:"name"`                  // as given
	Environment string            `json:"environment,omitempty"` // when Name is an environment
	Version     string            `json:"version"`
	RunID       string            `json:"runId,omitempty"` // the run that released or deployed it
	Commits     map[string]string `json:"commits"`
	Images      map[string]string `json:"images"`
}

// Diff is what changes from one release to another.
type Diff struct {
	A     DiffSide   `json:"a"`
	B     DiffSide   `json:"b"`
	Repos []RepoDiff `json:"repos"`
	// Changed are the images that differ from A to B; Unchanged the ones
	// both have at the same digest.
	Changed   []ImageChange  `json:"changed"`
	Unchanged []ServiceImage `json:"unchanged"`
}

// RepoDiff is one repo's commits between two releases.
type RepoDiff struct {
	Repo string `json:"repo"`
	From string `json:"from"` // A's commit; "" when A records none
	To   string `json:"to"`   // B's commit; "" when B records none
	// Added are the commits B has and A has not, newest first; Removed the
	// ones A has and B has not (B is older than A, or they diverge). Both
	// are empty when a side records no commit of the repo.
	Added   []Commit `json:"added"`
	Removed []Commit `json:"removed"`
}

// ServiceImage is a service's image.
type ServiceImage struct {
	Service string `json:"service"`
	Image   string `json:"image"`
}

// Diff compares two releases, each named by a version or by an
// environment (the release it runs now): per repo the commits between
// them, and which images changed.
func (e *Engine) Diff(ctx context.Context, a, b string) (*Diff, error) {
	sa, err := e.diffSide(ctx, a)
	if err != nil {
		return nil, err
	}
	sb, err := e.diffSide(ctx, b)
	if err != nil {
		return nil, err
	}
	d := &Diff{A: sa, B: sb, Repos: []RepoDiff{}, Changed: changes(sa.Images, sb.Images), Unchanged: []ServiceImage{}}
	for _, svc := range slices.Sorted(maps.Keys(sa.Images)) {
		if img := sa.Images[svc]; sb.Images[svc] == img {
			d.Unchanged = append(d.Unchanged, ServiceImage{Service: svc, Image: img})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(union(sa.Commits, sb.Commits))) {
		rd := RepoDiff{Repo: name, From: sa.Commits[name], To: sb.Commits[name], Added: []Commit{}, Removed: []Commit{}}
		// A side without the repo's commit has nothing to count from:
		// its whole history is no answer.
		if e.Repos != nil && rd.From != "" && rd.To != "" && rd.From != rd.To {
			if rd.Added, err = e.Repos.Log(ctx, name, rd.From, rd.To); err != nil {
				return nil, err
			}
			if rd.Removed, err = e.Repos.Log(ctx, name, rd.To, rd.From); err != nil {
				return nil, err
			}
		}
		d.Repos = append(d.Repos, rd)
	}
	return d, nil
}

// diffSide resolves one side of a diff: an environment is the release it
// runs now; a version is its release record, or the run that took it, or
// its tags.
func (e *Engine) diffSide(ctx context.Context, name string) (DiffSide, error) {
	p := e.Pipeline
	side := DiffSide{Name: name, Commits: map[string]string{}, Images: map[string]string{}}
	if _, ok := p.Spec.Environments[name]; ok {
		hist, err := e.Store.Deployments(ctx, name, 1)
		if err != nil {
			return side, err
		}
		if len(hist) == 0 {
			return side, refusedf("nothing was ever deployed to %s", name)
		}
		d := hist[0]
		side.Environment, side.Version, side.RunID, side.Images = name, d.Version, d.RunID, orEmpty(d.Images)
		var rel *pipeline.Release
		if d.Version != "" {
			if rel, err = e.recordedRelease(ctx, d.Version); err != nil {
				return side, err
			}
		}
		if rel != nil {
			side.Commits = orEmpty(rel.Commits)
		} else if run, err := e.Store.Run(ctx, d.RunID); err == nil {
			side.Commits = orEmpty(run.Commits)
		}
		return side, nil
	}
	v, err := parseVersion(name, p.Spec.Version.TagPrefix)
	if err != nil {
		return side, usagef("%q is neither a version nor an environment (environments: %s)", name, strings.Join(p.Spec.EnvironmentOrder(), ", "))
	}
	side.Version = v.String()
	rel, err := e.recordedRelease(ctx, v.String())
	if err != nil {
		return side, err
	}
	if rel != nil {
		side.RunID, side.Commits, side.Images = rel.RunID, orEmpty(rel.Commits), orEmpty(rel.Images)
		return side, nil
	}
	if e.Repos != nil && len(p.Spec.Repos) > 0 {
		tagged, err := e.Repos.Tagged(ctx, v.String())
		if err != nil {
			return side, err
		}
		if len(tagged) > 0 {
			side.Commits = tagged
			return side, nil
		}
	}
	return side, usagef("unknown version %s: no release record, no run and no tag %s%s", v, p.Spec.Version.TagPrefix, v)
}
