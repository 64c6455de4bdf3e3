package main

import (
	"errors"
	"fmt"

	"github.com/sweepboard/release/pipeline"
)

// The exit codes, in one table; `release --help` prints it.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2   // usage, or an invalid pipeline file
	exitFailed      = 3   // a stage failed; the run can be resumed
	exitLocked      = 4   // the environment is locked by another run
	exitWaiting     = 5   // the run waits for an approval
	exitInterrupted = 130 // SIGINT or SIGTERM
)

const exitCodesHelp = `Exit codes:
  0    ok
  1    error
  2    usage error or invalid pipeline file
  3    a stage failed; the run can be resumed
  4    the environment is locked by another run
  5    the run waits for an approval
  130  interrupted`

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
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &pe):
		return exitUsage
	case errors.As(err, &fe):
		return exitFailed
	case errors.As(err, &we):
		return exitWaiting
	case errors.Is(err, pipeline.ErrInterrupted):
		return exitInterrupted
	}
	return exitError
}
