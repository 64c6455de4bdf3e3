package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rogpeppe/go-internal/testscript"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/builtin"
)

// scriptKinds is the registry of the scripts' release command: the
// built-in kinds, and with RELEASE_SCRIPT_KINDS=fake two more that stand
// in for docker-push and deploy where a script needs releases and
// deployments recorded and no Docker engine (history, diff). The images
// are real, pushed to the script's in-process registry (see
// registryCmd); only building and running containers is left out.
func scriptKinds() *stages.Registry {
	r := builtin.Registry()
	if os.Getenv("RELEASE_SCRIPT_KINDS") == "fake" {
		r.Register(stages.Kind{Name: "fake-push", New: func() stages.Stage { return &fakePush{} }})
		r.Register(stages.Kind{Name: "fake-deploy", New: func() stages.Stage { return &fakeDeploy{} }})
	}
	return r
}

// fakePush pushes, for one service, an image whose only layer is the
// commit its repo was pinned at: the same commit gives the same digest.
type fakePush struct{}

func (*fakePush) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	svc := env.Spec.Services[env.Item]
	layer := static.NewLayer([]byte(svc.Repo+"@"+env.Commits[svc.Repo]+"\n"), types.DockerLayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	repo := env.Spec.Registry.URL + "/" + svc.Image
	// A branch deployment has no version: its image is tagged by commit.
	tag, err := name.NewTag(repo+":"+cmp.Or(env.Version, "git-"+env.Commits[svc.Repo][:7]), name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(env.Log, "pushed %s@%s\n", repo, d)
	return stages.Outputs{"image": repo + "@" + d.String()}, nil
}

// fakeDeploy records the release as deployed to its environment.
type fakeDeploy struct{}

func (*fakeDeploy) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	fmt.Fprintf(env.Log, "deployed %s to %s\n", env.Version, env.Environment)
	return nil, nil
}

func (*fakeDeploy) DeploysRelease() bool { return true }

var (
	_ stages.Stage    = (*fakePush)(nil)
	_ stages.Deployer = (*fakeDeploy)(nil)
)

// registryCmd is the script command `registry VAR`: an image registry in
// the test process for the rest of the script; VAR gets its host:port.
func registryCmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: registry VAR")
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	ts.Defer(srv.Close)
	ts.Setenv(args[0], strings.TrimPrefix(srv.URL, "http://"))
}
