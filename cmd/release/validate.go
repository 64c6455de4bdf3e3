package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// ValidateOptions are the inputs of `release validate`.
type ValidateOptions struct {
	f *Factory
}

// NewCmdValidate builds `release validate`. runF replaces the work in tests.
func NewCmdValidate(f *Factory, runF func(*ValidateOptions) error) *cobra.Command {
	opts := &ValidateOptions{f: f}
	return &cobra.Command{
		Use:   "validate",
		Short: "Check the pipeline file; every error as file:line:col",
		Long: `Check the pipeline file without running anything: strict keys, references between
repos, services, environments and stages, cycles, and each stage's own settings.
Exits 0 when the file is valid, 2 with every problem listed otherwise.`,
		Example: `  release validate
  release validate -f deploy/pipeline.yaml`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return validateRun(opts)
		},
	}
}

func validateRun(opts *ValidateOptions) error {
	f := opts.f
	p, plan, err := f.Plan(pipeline.Slice{})
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, map[string]any{"file": f.FileName(), "valid": true, "stages": len(p.Stages), "nodes": len(plan.Nodes)})
	}
	fmt.Fprintf(f.IO.Out, "%s: ok (%d stages, %d nodes)\n", f.FileName(), len(p.Stages), len(plan.Nodes))
	return nil
}
