package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
	"github.com/sweepboard/release/stages"
)

// pushByCommit is a push stage whose image names the commit it was built
// from.
type pushByCommit struct{}

func (pushByCommit) Run(_ context.Context, env *stages.Env) (stages.Outputs, error) {
	return stages.Outputs{"image": "reg/" + env.Item + "@sha256:" + env.Commits[env.Spec.Services[env.Item].Repo]}, nil
}

// deployNoop deploys nothing, and counts as a deploy for the history.
type deployNoop struct{}

func (deployNoop) Run(context.Context, *stages.Env) (stages.Outputs, error) { return nil, nil }
func (deployNoop) DeploysRelease() bool                                     { return true }

const branchPipeline = `name: train
version: {bump: minor}
repos:
  api: {url: repos/api.git}
  web: {url: repos/web.git}
services:
  api: {repo: api, image: t/api}
  web: {repo: web, image: t/web}
environments:
  dev: {hosts: [unix:///nowhere.sock]}
  staging: {from: dev, hosts: [unix:///nowhere.sock]}
stages:
  build: {uses: exec, for_each: service}
  push: {uses: push, for_each: service, needs: [build]}
  deploy-dev: {uses: deploy, environment: dev, needs: [push]}
  tag: {uses: git-tag, environment: staging, needs: [deploy-dev]}
  promote-staging: {uses: deploy, environment: staging, needs: [tag]}
  notes: {uses: github-release, environment: staging, needs: [promote-staging]}
`

func newBranchEngine(t *testing.T) *engine.Engine {
	t.Helper()
	return newTrainEngine(t, branchPipeline)
}

// newTrainEngine is an engine on the pipeline file text, its stages no-ops
// but for push (an image per commit) and deploy, its repos a gitTrain.
func newTrainEngine(t *testing.T, file string) *engine.Engine {
	t.Helper()
	reg := &stages.Registry{}
	for _, k := range []stages.Kind{
		{Name: "exec", New: func() stages.Stage { return noop{} }},
		{Name: "git-tag", New: func() stages.Stage { return noop{} }},
		{Name: "github-release", New: func() stages.Stage { return noop{} }},
		{Name: "approval", New: func() stages.Stage { return noop{} }},
		{Name: "push", New: func() stages.Stage { return pushByCommit{} }},
		{Name: "deploy", New: func() stages.Stage { return deployNoop{} }},
	} {
		reg.Register(k)
	}
	p, err := pipeline.Parse("pipeline.yaml", filepath.Join(t.TempDir(), "pipeline.yaml"), []byte(file), reg)
	if err != nil {
		t.Fatal(err)
	}
	e := &engine.Engine{Pipeline: p, Store: openStore(t), Stages: reg, WorkDir: t.TempDir()}
	e.Repos, _ = newTrainRepos()
	return e
}

func newTrainRepos() (*gitTrain, error) {
	return &gitTrain{
		branches: map[string]map[string]string{
			"api": {"main": "api-main", "feature/x": "api-feat"},
			"web": {"main": "web-main", "feature/y": "web-feat"},
		},
		base:   map[string]string{},
		tagged: map[string]map[string]string{"1.5.0": {"api": "api-150", "web": "web-150"}},
	}, nil
}

// TestDeployBranch: a branch deployment builds only the services of its
// repos, keeps the others at what the environment runs, takes no version,
// records no release, and is never promoted; a rollback goes back to the
// release before it.
func TestDeployBranch(t *testing.T) {
	e := newBranchEngine(t)
	ctx := context.Background()
	rel, err := e.Run(ctx, engine.RunRequest{}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != "1.6.0" {
		t.Fatalf("the release: %s", rel.Version)
	}
	// staging goes back to 1.5.0 (a release of its own here), so that a
	// promotion has something to do.
	if _, err := e.Run(ctx, engine.RunRequest{Version: "1.5.0"}, engine.Observer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Rollback(ctx, engine.RollbackRequest{Environment: "dev", To: "1.6.0"}, engine.Observer{}); err != nil {
		t.Fatal(err)
	}

	run, err := e.Deploy(ctx, engine.DeployRequest{Environment: "dev", Refs: map[string]string{"api": "feature/x"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, n := range run.Nodes {
		nodes = append(nodes, n.ID)
	}
	if diff := cmp.Diff([]string{"build[api]", "push[api]", "deploy-dev"}, nodes); diff != "" {
		t.Errorf("nodes of a branch deployment (-want +got):\n%s", diff)
	}
	wantImages := map[string]string{"api": "reg/api@sha256:api-feat", "web": rel.Images["web"]}
	type got struct {
		Kind, Version string
		Status        pipeline.Status
		Images        map[string]string
		Commits       map[string]string
		Refs          map[string]string
	}
	if diff := cmp.Diff(got{"deploy", "", pipeline.Succeeded, wantImages, map[string]string{"api": "api-feat", "web": "web-main"}, map[string]string{"api": "feature/x"}},
		got{run.Kind, run.Version, run.Status, run.Images, run.Commits, run.Refs}); diff != "" {
		t.Errorf("the branch deployment (-want +got):\n%s", diff)
	}
	if _, err := e.Store.Release(ctx, ""); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("a branch deployment recorded a release: %v", err)
	}
	hist, err := e.History(ctx, "dev", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || hist[0].Kind != "deploy" || hist[0].Refs["api"] != "feature/x" || hist[0].Commits["api"] != "api-feat" {
		t.Errorf("dev's history: %+v", hist)
	}
	st, err := e.Status(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Version != "" || st[0].Refs["api"] != "feature/x" || st[0].RunID != run.ID {
		t.Errorf("dev's status: %+v", st[0])
	}

	// A second branch deployment keeps what the first put there.
	web, err := e.Deploy(ctx, engine.DeployRequest{Environment: "dev", Refs: map[string]string{"web": "feature/y"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if web.Images["api"] != "reg/api@sha256:api-feat" || web.Commits["api"] != "api-feat" {
		t.Errorf("the second branch deployment dropped the first: %v %v", web.Images, web.Commits)
	}

	// promote skips branch deployments and says so.
	var notices []string
	obs := engine.Observer{Notice: func(s string) { notices = append(notices, s) }}
	pr, err := e.Promote(ctx, engine.PromoteRequest{Environment: "staging"}, obs)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Version != "1.6.0" || pr.Images["api"] != rel.Images["api"] {
		t.Errorf("promote took %s %v, want 1.6.0 %v", pr.Version, pr.Images, rel.Images)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "dev runs branch deployment "+web.ID+" (web=feature/y@web-fea), which is never promoted; promoting 1.6.0") {
		t.Errorf("notices: %q", notices)
	}
	_, err = e.Promote(ctx, engine.PromoteRequest{Environment: "staging"}, engine.Observer{})
	var re *engine.RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "nothing to promote: dev runs branch deployment "+web.ID) || !strings.Contains(err.Error(), "staging runs 1.6.0 already") {
		t.Errorf("promote again: %v, want a refusal naming the branch deployment", err)
	}

	// A rollback of dev goes to the release before the branches.
	rb, err := e.Rollback(ctx, engine.RollbackRequest{Environment: "dev"}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Version != "1.6.0" || rb.Images["api"] != rel.Images["api"] {
		t.Errorf("rollback of dev: %s %v", rb.Version, rb.Images)
	}

	// To staging: its deploy waits for the build through the stages left
	// out (tag, deploy-dev), and no tag or notes stage runs.
	sr, err := e.Deploy(ctx, engine.DeployRequest{Environment: "staging", Refs: map[string]string{"api": "feature/x"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	needs := map[string][]string{}
	for _, n := range sr.Nodes {
		needs[n.ID] = n.Needs
	}
	if diff := cmp.Diff(map[string][]string{"build[api]": {}, "push[api]": {"build[api]"}, "promote-staging": {"push[api]"}}, needs); diff != "" {
		t.Errorf("a branch deployment to staging (-want +got):\n%s", diff)
	}

	// No version was taken by the branch deployments: 1.6.0, the newest
	// handed out, is followed by 1.7.0.
	next, err := e.Run(ctx, engine.RunRequest{}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if next.Version != "1.7.0" {
		t.Errorf("the next release: %s, want 1.7.0", next.Version)
	}
}

// TestDeployRefused: what a branch deployment refuses, before anything is
// made.
func TestDeployRefused(t *testing.T) {
	e := newBranchEngine(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  engine.DeployRequest
		msg  string
	}{
		{"no ref", engine.DeployRequest{Environment: "dev"}, "deploy dev: give at least one --ref REPO=BRANCH|SHA"},
		{"unknown environment", engine.DeployRequest{Environment: "qa", Refs: map[string]string{"api": "feature/x"}}, `unknown environment "qa"`},
		{"unknown ref", engine.DeployRequest{Environment: "dev", Refs: map[string]string{"api": "feature/none"}}, `--ref api=feature/none: repo api has no branch, tag or commit "feature/none"`},
		{"nothing beside it", engine.DeployRequest{Environment: "dev", Refs: map[string]string{"api": "feature/x"}}, "deploy dev: dev runs nothing of web (repo web): deploy a release to it first, or give those repos a --ref too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			created := false
			_, err := e.Deploy(ctx, tc.req, engine.Observer{Created: func(string) { created = true }})
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %q", err, tc.msg)
			}
			if created {
				t.Error("a run was made")
			}
		})
	}
	// Every repo given: dev needs nothing beside it; staging then has only
	// branch deployments to promote from, and refuses.
	run, err := e.Deploy(ctx, engine.DeployRequest{Environment: "dev", Refs: map[string]string{"api": "feature/x", "web": "api-main"}}, engine.Observer{})
	if err == nil {
		t.Fatalf("deploy with a commit of another repo: %s", run.Status)
	}
	run, err = e.Deploy(ctx, engine.DeployRequest{Environment: "dev", Refs: map[string]string{"api": "feature/x", "web": "web-main"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Promote(ctx, engine.PromoteRequest{Environment: "staging"}, engine.Observer{})
	if err == nil || !strings.Contains(err.Error(), "nothing to promote: dev has had only branch deployments (the newest: "+run.ID+", api=feature/x@api-fea, web=web-main)") {
		t.Errorf("promote of only branch deployments: %v", err)
	}
}
