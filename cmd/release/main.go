// Command release runs a release pipeline: build the images once, push them,
// deploy to dev, promote the same digests to staging and prod, tag every
// repo, and keep a record of every step.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/builtin"
	execstage "github.com/sweepboard/release/stages/exec"
)

func main() { os.Exit(run()) }

// run is the whole program.
func run() int { return runWith(builtin.Registry) }

// runWith is the program with the stage kinds of reg; testscript calls it
// as the "release" command.
func runWith(reg func() *stages.Registry) int {
	// An exec stage's command runs under a supervisor that is this
	// program re-executed: in that process, Supervise runs it and exits.
	execstage.Supervise()
	f := &Factory{IO: SystemIO(), Registry: reg, Getenv: os.Getenv}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := NewCmdRoot(f)
	cmd.SetArgs(os.Args[1:])
	if c, _, err := cmd.Find(os.Args[1:]); err != nil || c.Name() != "serve" {
		// serve stops its runs at their next safe point, as it documents.
		defer context.AfterFunc(ctx, func() { hardStop(f.IO.ErrOut) })()
	}
	err := cmd.ExecuteContext(ctx)
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = &codedError{code: exitUsage, err: err}
	}
	code := exitCode(err)
	if err != nil && ctx.Err() != nil {
		// A signal ended it, whatever the call it cut short said.
		code = exitInterrupted
	}
	var invalid pipeline.Errors
	switch {
	case err == nil, errors.Is(err, errSilent):
	case errors.As(err, &invalid):
		fmt.Fprintln(f.IO.ErrOut, invalid) // one file:line:col: message per line
	default:
		fmt.Fprintf(f.IO.ErrOut, "release: %v\n", err)
	}
	var unrecorded *pipeline.UnrecordedError
	if errors.As(err, &unrecorded) {
		for _, line := range unrecorded.Lines() {
			fmt.Fprintln(f.IO.ErrOut, line)
		}
	}
	return code
}

// hardStopAfter is how long after SIGINT or SIGTERM the process ends
// whatever is still in flight: the executor gives its nodes and the store a
// grace of about two seconds (pipeline.DefaultGrace), and the exit
// promised is within 5 s.
const hardStopAfter = 4500 * time.Millisecond

// hardStop ends the process hardStopAfter from now, unless it ended by
// then: a peer that holds a call past every deadline must not hold the
// exit. What was not recorded stays as the record has it; the run's lease
// lapses and a resume goes on from the record.
func hardStop(errOut io.Writer) {
	time.AfterFunc(hardStopAfter, func() {
		fmt.Fprintf(errOut, "release: still not stopped %s after the signal: exiting now; what was not recorded stays as the record has it, and the run resumes from there (release resume RUN_ID)\n", hardStopAfter)
		os.Exit(exitInterrupted)
	})
}

// errSilent marks an error whose message the command already printed.
var errSilent = errors.New("")

// silent wraps err so that main prints nothing more for it but still exits
// with its code.
func silent(err error) error {
	if err == nil {
		return nil
	}
	return &silentError{err}
}

type silentError struct{ err error }

func (e *silentError) Error() string { return e.err.Error() }
func (e *silentError) Unwrap() []error {
	return []error{e.err, errSilent}
}

// NewCmdRoot builds the command tree.
func NewCmdRoot(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "release",
		Short: "Run a release pipeline: build once, promote by digest, tag all repos",
		Long: `release runs the pipeline in pipeline.yaml as a DAG of stages, records every step
in a state store, and can resume, promote, roll back and report.

` + exitCodesHelp,
		Example: `  release validate
  release plan --bump minor
  release run --yes
  release runs show 20261126-091500-3fa9c1 -o json`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if f.Getenv("NO_COLOR") != "" {
				f.NoColor = true
			}
			return f.checkOutput()
		},
	}
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &codedError{code: exitUsage, err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVarP(&f.File, "file", "f", "", "pipeline file (default pipeline.yaml; RELEASE_FILE)")
	pf.StringVar(&f.State, "state", "", "state store: a file path or postgres:// URL (RELEASE_STATE)")
	pf.StringVarP(&f.Output, "output", "o", "text", "output format: text or json")
	pf.BoolVar(&f.NoColor, "no-color", false, "no colour in output (also NO_COLOR)")
	pf.BoolVarP(&f.Verbose, "verbose", "v", false, "print stage output as it happens")
	addVersionFlag(root, f)

	root.AddCommand(
		NewCmdInit(f, nil),
		NewCmdValidate(f, nil),
		NewCmdSchema(f, nil),
		NewCmdPlan(f, nil),
		NewCmdGraph(f, nil),
		NewCmdRun(f, nil),
		NewCmdResume(f, nil),
		NewCmdApprove(f, nil),
		NewCmdCancel(f, nil),
		NewCmdRuns(f),
		NewCmdLogs(f, nil),
		NewCmdTag(f, nil),
		NewCmdVersion(f, nil),
		NewCmdDeploy(f, nil),
		NewCmdEnv(f),
		NewCmdPromote(f, nil),
		NewCmdRollback(f, nil),
		NewCmdStatus(f, nil),
		NewCmdHistory(f, nil),
		NewCmdDiff(f, nil),
		NewCmdShow(f, nil),
		NewCmdNotes(f, nil),
		NewCmdDoctor(f, nil),
		NewCmdServe(f, nil),
	)
	addCompletions(root, f)
	return root
}

// exactArgs is cobra.ExactArgs with the usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return &codedError{code: exitUsage, err: err}
		}
		return nil
	}
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(lo, hi)(cmd, args); err != nil {
			return &codedError{code: exitUsage, err: err}
		}
		return nil
	}
}
