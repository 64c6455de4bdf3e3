package deploy

import (
	"context"
	"fmt"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy/target"
)

// Live is one container of an environment as it runs now, or the absence
// of one (see target.Live).
type Live = target.Live

// Inspect asks the environment's deploy target what runs: per host of the
// environment (in the file's order) and per service (sorted), the
// containers a deploy left there and whether they answer their health
// check. An unreachable host yields one Live per service whose Health says
// why, so the caller can still report the other hosts.
func Inspect(ctx context.Context, spec *stages.Spec, environment string) ([]Live, error) {
	e, ok := spec.Environments[environment]
	if !ok {
		return nil, fmt.Errorf("inspect environment %q: no such environment", environment)
	}
	if len(e.Hosts) == 0 {
		return nil, fmt.Errorf("inspect environment %q: no hosts", environment)
	}
	s := &Stage{}
	t, err := s.open(ctx, spec, environment, s.targetConfig(spec, environment))
	if err != nil {
		return nil, fmt.Errorf("inspect environment %q: %w", environment, err)
	}
	defer t.Close()
	return t.Inspect(ctx), nil
}
