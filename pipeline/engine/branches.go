package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/sweepboard/release/pipeline"
)

// Branches is Repos that can read refs other than the file's branches:
// what hotfix releases (release run --ref) and branch deployments (release
// deploy --ref) are built from. The engine finds it by type assertion.
type Branches interface {
	// Resolve reads ref (a branch, a tag or a commit) in repo, fetched
	// from its remote; the error names the repo and the ref.
	Resolve(ctx context.Context, repo, ref string) (Ref, error)
	// Base is the newest release whose tag in repo is reachable from
	// commit; "" when none is.
	Base(ctx context.Context, repo, commit string) (string, error)
	// Versions are the release versions tagged in any repo.
	Versions(ctx context.Context) ([]string, error)
}

// Ref is a ref given for one repo, resolved.
type Ref struct {
	Repo   string `json:"repo"`
	Ref    string `json:"ref"`
	Commit string `json:"commit"`
	// Branch says Ref is a branch of the remote.
	Branch bool `json:"-"`
}

// ParseRefs reads --ref values, REPO=REF each; a repo given twice is an
// error.
func ParseRefs(values []string) (map[string]string, error) {
	refs := map[string]string{}
	for _, v := range values {
		repo, ref, ok := strings.Cut(v, "=")
		repo, ref = strings.TrimSpace(repo), strings.TrimSpace(ref)
		if !ok || repo == "" || ref == "" {
			return nil, usagef("--ref %q: want REPO=REF, as in api=feature/login", v)
		}
		if old, dup := refs[repo]; dup {
			return nil, usagef("--ref %s=%s: repo %s is given twice (also %s)", repo, ref, repo, old)
		}
		refs[repo] = ref
	}
	return refs, nil
}

// resolveRefs resolves every ref in its repo, before anything is created:
// an unknown repo or a ref its repo does not have is a *UsageError naming
// both.
func (e *Engine) resolveRefs(ctx context.Context, refs map[string]string) (map[string]Ref, error) {
	spec := e.Pipeline.Spec
	for _, repo := range slices.Sorted(maps.Keys(refs)) {
		if _, ok := spec.Repos[repo]; !ok {
			known := "none"
			if len(spec.Repos) > 0 {
				known = strings.Join(spec.RepoNames(), ", ")
			}
			return nil, usagef("--ref %s=%s: the pipeline has no repo %s (repos: %s)", repo, refs[repo], repo, known)
		}
	}
	b, ok := e.Repos.(Branches)
	if !ok {
		return nil, usagef("--ref: the repos of this engine cannot read other branches")
	}
	out := map[string]Ref{}
	for _, repo := range slices.Sorted(maps.Keys(refs)) {
		r, err := b.Resolve(ctx, repo, refs[repo])
		if err != nil {
			return nil, usagef("--ref %s=%s: %v", repo, refs[repo], err)
		}
		out[repo] = r
	}
	return out, nil
}

// withBranches is the pipeline as a hotfix run sees it: the repos given a
// branch are read, checked and tagged on that branch instead of the
// file's.
func withBranches(p *pipeline.Pipeline, branches map[string]string) *pipeline.Pipeline {
	if len(branches) == 0 {
		return p
	}
	spec := *p.Spec
	spec.Repos = maps.Clone(p.Spec.Repos)
	for repo, branch := range branches {
		if r, ok := spec.Repos[repo]; ok {
			r.Branch = branch
			spec.Repos[repo] = r
		}
	}
	cp := *p
	cp.Spec = &spec
	return &cp
}

// pipelineOf is the pipeline a recorded run executes: a hotfix run's
// repos on its branches; a deployment to an instance with the instance.
func (e *Engine) pipelineOf(ctx context.Context, run *pipeline.Run) (*pipeline.Pipeline, error) {
	switch {
	case run.Kind == "run":
		return withBranches(e.Pipeline, run.Refs), nil
	case run.Kind == pipeline.KindDeploy:
		if _, ok := e.templateOf(run.Environment); !ok {
			break
		}
		in, err := e.instanceOf(ctx, run.Environment)
		if err != nil {
			return nil, err
		}
		if in == nil {
			return nil, refusedf("run %s: environment %s was removed (release env rm): deploy it anew with release deploy", run.ID, run.Environment)
		}
		return instancePipeline(e.Pipeline, in), nil
	}
	return e.Pipeline, nil
}

// hotfix is what a hotfix release is made of: the release its branches
// descend from and the commit of every repo.
type hotfix struct {
	base    string
	commits map[string]string
	reason  string
}

// prepareHotfix resolves a hotfix run's refs, which must be branches, and
// pins every repo: the given ones at their branch heads, the others at
// the commits of the release those branches descend from (its record,
// else its tags).
func (e *Engine) prepareHotfix(ctx context.Context, req RunRequest) (*hotfix, error) {
	if req.Bump != "" && req.Bump != "patch" {
		return nil, usagef("--bump %s with --ref: a hotfix release is a patch on the release its branches descend from", req.Bump)
	}
	refs, err := e.resolveRefs(ctx, req.Refs)
	if err != nil {
		return nil, err
	}
	b := e.Repos.(Branches)
	var base *semver.Version
	var from []string
	for _, repo := range slices.Sorted(maps.Keys(refs)) {
		r := refs[repo]
		if !r.Branch {
			return nil, usagef("--ref %s=%s: a release is built from a branch, and %s is none in repo %s (release deploy takes tags and commits)", repo, r.Ref, r.Ref, repo)
		}
		v, err := b.Base(ctx, repo, r.Commit)
		if err != nil {
			return nil, fmt.Errorf("--ref %s=%s: %w", repo, r.Ref, err)
		}
		if v == "" {
			return nil, refusedf("--ref %s=%s: no release tag of repo %s is reachable from %.7s: a hotfix patches a release, and this branch descends from none", repo, r.Ref, repo, r.Commit)
		}
		bv, err := semver.NewVersion(v)
		if err != nil {
			return nil, fmt.Errorf("--ref %s=%s: %w", repo, r.Ref, err)
		}
		if base == nil || bv.GreaterThan(base) {
			base = bv
		}
		from = append(from, fmt.Sprintf("%s=%s", repo, r.Ref))
	}
	h := &hotfix{base: base.String(), commits: map[string]string{}}
	var recorded map[string]string
	if rel, err := e.recordedRelease(ctx, h.base); err != nil {
		return nil, err
	} else if rel != nil {
		recorded = rel.Commits
	}
	var tagged map[string]string
	for _, repo := range e.Pipeline.Spec.RepoNames() {
		if r, ok := refs[repo]; ok {
			h.commits[repo] = r.Commit
			continue
		}
		c := recorded[repo]
		if c == "" {
			if tagged == nil {
				if tagged, err = e.Repos.Tagged(ctx, h.base); err != nil {
					return nil, err
				}
			}
			c = tagged[repo]
		}
		if c == "" {
			return nil, refusedf("hotfix of %s: repo %s has no commit recorded for %s and no tag %s%s: give it a --ref too", h.base, repo, h.base, e.Pipeline.Spec.Version.TagPrefix, h.base)
		}
		h.commits[repo] = c
	}
	h.reason = fmt.Sprintf("hotfix: a patch on %s, the newest release %s descends from", h.base, strings.Join(from, ", "))
	return h, nil
}

// allocateHotfix takes the first patch version above the hotfix's base
// that no repo has tagged and no run of the pipeline took.
func (e *Engine) allocateHotfix(ctx context.Context, runID string, h *hotfix) (Version, error) {
	p := e.Pipeline
	tagged, err := e.Repos.(Branches).Versions(ctx)
	if err != nil {
		return Version{}, err
	}
	v := Version{Reason: h.reason, Bump: "patch", PreviousTag: p.Spec.Version.TagPrefix + h.base}
	got, err := e.Store.AllocateVersion(ctx, p.Spec.Name, runID, func(taken []string) (string, error) {
		used := map[string]bool{}
		for _, t := range append(slices.Clone(taken), tagged...) {
			if tv, err := semver.NewVersion(t); err == nil {
				used[tv.String()] = true
			}
		}
		want := semver.MustParse(h.base).IncPatch()
		first := want
		for used[want.String()] {
			want = want.IncPatch()
		}
		if !want.Equal(&first) {
			v.Reason += fmt.Sprintf("; %s is tagged or taken already, so %s", first.String(), want.String())
		}
		return want.String(), nil
	})
	if err != nil {
		return Version{}, err
	}
	v.Version = got
	return v, nil
}
