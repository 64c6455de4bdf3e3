package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// gitTrain is a fake train of repos: each repo's refs (branch or tag name,
// or commit) with their commits, the release each commit descends from,
// and the release tags.
type gitTrain struct {
	branches map[string]map[string]string // repo → branch → commit
	base     map[string]string            // commit → release it descends from
	tagged   map[string]map[string]string // version → repo → commit
}

func (g *gitTrain) Heads(context.Context) (map[string]string, error) {
	out := map[string]string{}
	for repo, bs := range g.branches {
		out[repo] = bs["main"]
	}
	return out, nil
}

func (g *gitTrain) Next(_ context.Context, bump, given string, _ map[string]string) (engine.Version, error) {
	if given != "" {
		return engine.Version{Version: given, Reason: "given"}, nil
	}
	newest := semver.MustParse("0.0.0")
	for v := range g.tagged {
		if sv := semver.MustParse(v); sv.GreaterThan(newest) {
			newest = sv
		}
	}
	return engine.Version{Version: newest.IncMinor().String(), Bump: "minor", Reason: "minor bump of " + newest.String()}, nil
}

func (g *gitTrain) Tagged(_ context.Context, version string) (map[string]string, error) {
	return g.tagged[version], nil
}

func (g *gitTrain) Notes(context.Context, string, map[string]string) (engine.RepoNotes, error) {
	return engine.RepoNotes{}, nil
}

func (g *gitTrain) Log(context.Context, string, string, string) ([]engine.Commit, error) {
	return nil, nil
}

func (g *gitTrain) Resolve(_ context.Context, repo, ref string) (engine.Ref, error) {
	if c, ok := g.branches[repo][ref]; ok {
		return engine.Ref{Repo: repo, Ref: ref, Commit: c, Branch: true}, nil
	}
	for _, bs := range g.branches[repo] {
		if bs == ref {
			return engine.Ref{Repo: repo, Ref: ref, Commit: ref}, nil
		}
	}
	return engine.Ref{}, fmt.Errorf("repo %s has no branch, tag or commit %q", repo, ref)
}

func (g *gitTrain) Base(_ context.Context, _, commit string) (string, error) {
	return g.base[commit], nil
}

func (g *gitTrain) Versions(context.Context) ([]string, error) {
	var vs []string
	for v := range g.tagged {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs, nil
}

const trainPipeline = `name: train
version: {bump: minor}
repos:
  api: {url: repos/api.git}
  web: {url: repos/web.git}
stages:
  one: {uses: exec}
`

// newTrain: 1.4.0 and 1.5.0 are released; api has a release/1.4 branch
// with a fix on it, and a feature branch cut from main; main moved on.
func newTrain(t *testing.T) (*engine.Engine, *gitTrain) {
	g := &gitTrain{
		branches: map[string]map[string]string{
			"api": {"main": "api-main", "release/1.4": "api-fix", "feature/x": "api-feat", "orphan": "api-orphan"},
			"web": {"main": "web-main"},
		},
		base: map[string]string{"api-main": "1.5.0", "api-fix": "1.4.0", "api-feat": "1.5.0", "web-main": "1.5.0"},
		tagged: map[string]map[string]string{
			"1.4.0": {"api": "api-140", "web": "web-140"},
			"1.5.0": {"api": "api-150", "web": "web-150"},
		},
	}
	e := newEngine(t, openStore(t), trainPipeline)
	e.Repos = g
	return e, g
}

// TestHotfixRun: a hotfix from release/1.4 is 1.4.1, api at the branch
// head and web at 1.4.0's commit; another one is 1.4.2; the next run from
// main continues the main line at 1.6.0.
func TestHotfixRun(t *testing.T) {
	e, _ := newTrain(t)
	ctx := context.Background()
	hot, err := e.Run(ctx, engine.RunRequest{Refs: map[string]string{"api": "release/1.4"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Version string
		Commits map[string]string
		Refs    map[string]string
		Status  pipeline.Status
	}
	want := got{"1.4.1", map[string]string{"api": "api-fix", "web": "web-140"}, map[string]string{"api": "release/1.4"}, pipeline.Succeeded}
	if diff := cmp.Diff(want, got{hot.Version, hot.Commits, hot.Refs, hot.Status}); diff != "" {
		t.Errorf("hotfix run (-want +got):\n%s", diff)
	}
	if !strings.Contains(hot.Params["versionReason"], "a patch on 1.4.0") {
		t.Errorf("reason %q does not say what it patches", hot.Params["versionReason"])
	}
	rec, err := e.Store.Run(ctx, hot.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Refs, rec.Refs); diff != "" {
		t.Errorf("recorded refs (-want +got):\n%s", diff)
	}

	again, err := e.Run(ctx, engine.RunRequest{Refs: map[string]string{"api": "release/1.4"}, Bump: "patch"}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != "1.4.2" {
		t.Errorf("second hotfix got %s, want 1.4.2 (1.4.1 is taken)", again.Version)
	}
	main, err := e.Run(ctx, engine.RunRequest{}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if main.Version != "1.6.0" || main.Refs != nil || main.Commits["api"] != "api-main" {
		t.Errorf("the next run from main: %s at %v refs %v, want 1.6.0 at main", main.Version, main.Commits, main.Refs)
	}
}

// TestHotfixRefused: bad refs are refused before any run is made, naming
// the repo and the ref.
func TestHotfixRefused(t *testing.T) {
	e, _ := newTrain(t)
	ctx := context.Background()
	var ue *engine.UsageError
	var re *engine.RefusedError
	for _, tc := range []struct {
		name string
		req  engine.RunRequest
		as   any
		msg  string
	}{
		{"unknown repo", engine.RunRequest{Refs: map[string]string{"db": "main"}}, &ue, "--ref db=main: the pipeline has no repo db (repos: api, web)"},
		{"unknown ref", engine.RunRequest{Refs: map[string]string{"api": "release/9"}}, &ue, `--ref api=release/9: repo api has no branch, tag or commit "release/9"`},
		{"a commit", engine.RunRequest{Refs: map[string]string{"api": "api-fix"}}, &ue, "--ref api=api-fix: a release is built from a branch"},
		{"a major bump", engine.RunRequest{Refs: map[string]string{"api": "release/1.4"}, Bump: "major"}, &ue, "--bump major with --ref: a hotfix release is a patch"},
		{"no release below", engine.RunRequest{Refs: map[string]string{"api": "orphan"}}, &re, "--ref api=orphan: no release tag of repo api is reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			created := false
			_, err := e.Run(ctx, tc.req, engine.Observer{Created: func(string) { created = true }})
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %q", err, tc.msg)
			}
			switch as := tc.as.(type) {
			case **engine.UsageError:
				if !errors.As(err, as) {
					t.Errorf("%v is no UsageError", err)
				}
			case **engine.RefusedError:
				if !errors.As(err, as) {
					t.Errorf("%v is no RefusedError", err)
				}
			}
			if created {
				t.Error("a run was created before the refs were checked")
			}
		})
	}
	runs, err := e.Store.Runs(ctx, pipeline.RunFilter{})
	if err != nil || len(runs) != 0 {
		t.Errorf("runs after refusals: %d, %v; want none", len(runs), err)
	}
}
