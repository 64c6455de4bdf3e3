// Package approval is the "approval" stage: a gate that holds the run until
// someone approves it with `release approve RUN STAGE`, or that was approved
// up front with `release run --yes`.
package approval

import (
	"context"
	"fmt"
	"time"

	"github.com/sweepboard/release/stages"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "approval", New: func() stages.Stage { return &Stage{} }}

// Stage waits for an approval. It has no configuration.
type Stage struct{}

// Run succeeds when the node carries an approval and reports
// stages.ErrWaiting otherwise.
func (s *Stage) Run(_ context.Context, env *stages.Env) (stages.Outputs, error) {
	a := env.Approval
	if a == nil {
		fmt.Fprintf(env.Log, "waiting: approve with `release approve %s %s`\n", env.RunID, env.Node)
		return nil, stages.ErrWaiting
	}
	how := "approved"
	if a.UpFront {
		how = "approved up front (--yes)"
	}
	fmt.Fprintf(env.Log, "%s by %s at %s\n", how, a.By, a.At.UTC().Format(time.RFC3339))
	return stages.Outputs{"approvedBy": a.By, "approvedAt": a.At.UTC().Format(time.RFC3339), "upFront": fmt.Sprint(a.UpFront)}, nil
}

var _ stages.Stage = (*Stage)(nil)
