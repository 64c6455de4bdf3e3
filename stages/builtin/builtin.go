// Package builtin lists the stage kinds that ship with release. It is the
// one place a kind is registered: a test builds its own registry instead.
package builtin

import (
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/approval"
	"github.com/sweepboard/release/stages/deploy"
	"github.com/sweepboard/release/stages/dockerbuild"
	"github.com/sweepboard/release/stages/dockerexec"
	"github.com/sweepboard/release/stages/dockerpush"
	"github.com/sweepboard/release/stages/dockerrun"
	"github.com/sweepboard/release/stages/exec"
	"github.com/sweepboard/release/stages/githubrelease"
	"github.com/sweepboard/release/stages/gittag"
)

// Kinds are the built-in stage kinds.
var Kinds = []stages.Kind{
	approval.Kind,
	deploy.Kind,
	dockerbuild.Kind,
	dockerexec.Kind,
	dockerpush.Kind,
	dockerrun.Kind,
	exec.Kind,
	githubrelease.Kind,
	gittag.Kind,
}

// Registry returns a registry of the built-in kinds.
func Registry() *stages.Registry {
	r := &stages.Registry{}
	for _, k := range Kinds {
		r.Register(k)
	}
	return r
}
