package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// instancePipeline has a template of staging, which is behind an approval
// gate and waits for the build through tag, a stage it leaves out.
const instancePipeline = `name: train
repos:
  api: {url: repos/api.git}
  web: {url: repos/web.git}
services:
  api: {repo: api, image: t/api}
  web: {repo: web, image: t/web}
environments:
  dev: {hosts: [unix:///nowhere.sock]}
  staging:
    from: dev
    approval: required
    hosts: [unix:///nowhere.sock]
    proxy: {listen: {web: "127.0.0.1:29400"}}
  pr-*:
    from: staging
    hosts: [unix:///nowhere.sock]
    proxy: {listen: {web: "127.0.0.1:29400-29401"}}
stages:
  build: {uses: exec, for_each: service}
  push: {uses: push, for_each: service, needs: [build]}
  deploy-dev: {uses: deploy, environment: dev, needs: [push]}
  tag: {uses: git-tag, environment: staging, needs: [deploy-dev]}
  promote-staging: {uses: deploy, environment: staging, needs: [tag]}
  notes: {uses: github-release, environment: staging, needs: [promote-staging]}
`

// TestDeployInstance: release deploy pr-x of template pr-* runs staging's
// stages in pr-x (not its gate, nor tag or notes), with the services no
// ref names at the release staging runs and a listen address staging does
// not hold; a later deployment keeps what an earlier ref built; status
// shows the instance; removal takes its record, twice.
func TestDeployInstance(t *testing.T) {
	e := newTrainEngine(t, instancePipeline)
	p := e.Pipeline
	if _, ok := p.Spec.Environments["pr-*"]; ok || len(p.Spec.Templates) != 1 {
		t.Fatalf("the template is among the environments: %v, templates %v", p.Spec.EnvironmentOrder(), p.Spec.Templates)
	}
	ctx := context.Background()

	_, err := e.Deploy(ctx, engine.DeployRequest{Environment: "pr-x", Refs: map[string]string{"api": "feature/x"}}, engine.Observer{})
	var re *engine.RefusedError
	if !errors.As(err, &re) {
		t.Errorf("pr-x before staging ran a release: %v, want a refusal", err)
	}
	rel, err := e.Run(ctx, engine.RunRequest{Yes: true}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}

	run, err := e.Deploy(ctx, engine.DeployRequest{Environment: "pr-x", Refs: map[string]string{"api": "feature/x"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	needs := map[string][]string{}
	for _, n := range run.Nodes {
		needs[n.ID+"@"+n.Environment] = n.Needs
	}
	if diff := cmp.Diff(map[string][]string{"build[api]@": {}, "push[api]@": {"build[api]"}, "promote-staging@pr-x": {"push[api]"}}, needs); diff != "" {
		t.Errorf("the nodes of a deployment to pr-x (-want +got):\n%s", diff)
	}
	want := map[string]string{"api": "reg/api@sha256:api-feat", "web": rel.Images["web"]}
	if diff := cmp.Diff(want, run.Images); diff != "" || run.Status != pipeline.Succeeded || run.Environment != "pr-x" {
		t.Errorf("pr-x: %s in %s, images (-want +got):\n%s", run.Status, run.Environment, diff)
	}

	again, err := e.Deploy(ctx, engine.DeployRequest{Environment: "pr-x", Refs: map[string]string{"web": "feature/y"}}, engine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"api": "reg/api@sha256:api-feat", "web": "reg/web@sha256:web-feat"}
	if diff := cmp.Diff(want, again.Images); diff != "" {
		t.Errorf("pr-x deployed again keeps the api feature/x built (-want +got):\n%s", diff)
	}

	list, err := e.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "pr-x" || list[0].Network != "release-train-pr-x" ||
		!cmp.Equal(list[0].Listen, map[string]string{"web": "127.0.0.1:29401"}) ||
		!cmp.Equal(list[0].Refs, map[string]string{"api": "feature/x", "web": "feature/y"}) {
		t.Errorf("instances: %+v", list)
	}
	st, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last := st[len(st)-1]; last.Name != "pr-x" || last.Template != "pr-*" || last.RunID != again.ID {
		t.Errorf("status, last: %+v", last)
	}

	for _, bad := range []engine.DeployRequest{
		{Environment: "pr-*", Refs: map[string]string{"api": "main"}},
		{Environment: "pr-X", Refs: map[string]string{"api": "main"}},
	} {
		var ue *engine.UsageError
		if _, err := e.Deploy(ctx, bad, engine.Observer{}); !errors.As(err, &ue) {
			t.Errorf("deploy %s: %v, want a usage error", bad.Environment, err)
		}
	}
	var ue *engine.UsageError
	if _, err := e.Promote(ctx, engine.PromoteRequest{Environment: "pr-*"}, engine.Observer{}); !errors.As(err, &ue) {
		t.Errorf("promote pr-*: %v, want a usage error", err)
	}
	for _, name := range []string{"staging", "pr-*", "qa-1"} {
		if _, _, err := e.RemoveEnvironment(ctx, engine.RemoveRequest{Name: name}); !errors.As(err, &ue) {
			t.Errorf("remove %s: %v, want a usage error", name, err)
		}
	}
	for i, wantGone := range []bool{false, true} {
		if _, gone, err := e.RemoveEnvironment(ctx, engine.RemoveRequest{Name: "pr-x"}); err != nil || gone != wantGone {
			t.Errorf("remove pr-x [%d]: gone %v, %v; want gone %v", i, gone, err, wantGone)
		}
	}
	if list, _ := e.Instances(ctx); len(list) != 0 {
		t.Errorf("instances after remove: %+v", list)
	}
}
