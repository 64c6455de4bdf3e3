package deploy

import (
	dockertarget "github.com/sweepboard/release/stages/deploy/docker"
	"github.com/sweepboard/release/stages/deploy/swarm"
	"github.com/sweepboard/release/stages/deploy/target"
)

// Targets are the deploy targets an environment's `target:` names, filled
// from this one list: a new target is one package and one line here.
var Targets = targets()

func targets() target.Registry {
	r := target.Registry{}
	r.Register(dockertarget.Name, dockertarget.Open)
	r.Register(swarm.Name, swarm.Open)
	return r
}
