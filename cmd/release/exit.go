package main

import (
	"errors"
	"fmt"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
)

// The exit codes, in one table; `release --help` prints it.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2   // usage, or an invalid pipeline file
	exitFailed      = 3   // a stage failed; the run can be resumed
	exitLocked      = 4   // the environment is locked by another run
	exitWaiting     = 5   // the run waits for an approval or for a freeze to end
	exitCancelled   = 6   // someone cancelled the run; it is not resumed
	exitFenced      = 7   // the run lost its lease (expired, taken over); it can be resumed
	exitNothing     = 8   // version next: no commit asks for a release (its answer is still printed)
	exitDrift       = 9   // status: an environment drifts from its record or runs an unhealthy service
	exitInterrupted = 130 // SIGINT or SIGTERM
)

const exitCodesHelp = `Exit codes:
  0    ok
  1    error
  2    usage error or invalid pipeline file
  3    a stage failed; the run can be resumed
  4    the environment is locked by another run
  5    the run waits for an approval, or for a freeze window to end
  6    the run was cancelled by someone (release cancel); it is not resumed
  7    the run lost its lease (it expired, or another owner took it over);
       its in-flight nodes were stopped and it can be resumed
  8    nothing to release: version next found no feat, fix or breaking
       change since the last release tag (its answer is still printed)
  9    status: an environment drifts from its record or runs an unhealthy
       service (the status is still printed)
  130  interrupted by SIGINT or SIGTERM; the run can be resumed`

// codedError carries an exit code with an error.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &codedError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var ee *codedError
	var fe *pipeline.FailedError
	var we *pipeline.WaitingError
	var pe pipeline.Errors
	var ce *pipeline.CancelledError
	var fenced *pipeline.FencedError
	var held *pipeline.HeldError
	var ue *engine.UsageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &pe), errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &held):
		return exitLocked
	case errors.As(err, &fe):
		return exitFailed
	case errors.As(err, &we):
		return exitWaiting
	case errors.As(err, &ce):
		return exitCancelled
	case errors.As(err, &fenced):
		return exitFenced
	case errors.Is(err, pipeline.ErrInterrupted):
		return exitInterrupted
	}
	return exitError
}
