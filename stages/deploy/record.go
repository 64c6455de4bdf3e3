package deploy

import "github.com/sweepboard/release/stages"

// DeploysRelease tells the engine that a succeeded deploy node made the
// run's release live in its environment, to be recorded in its history.
func (s *Stage) DeploysRelease() bool { return true }

var _ stages.Deployer = (*Stage)(nil)
