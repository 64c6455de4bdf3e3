// Package builtin lists the stage kinds that ship with release. It is the
// one place a kind is registered: a test builds its own registry instead.
package builtin

import (
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/approval"
	"github.com/sweepboard/release/stages/exec"
)

// Kinds are the built-in stage kinds.
var Kinds = []stages.Kind{
	approval.Kind,
	exec.Kind,
}

// Registry returns a registry of the built-in kinds.
func Registry() *stages.Registry {
	r := &stages.Registry{}
	for _, k := range Kinds {
		r.Register(k)
	}
	return r
}
