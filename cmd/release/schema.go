package main

import (
	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// SchemaOptions are the inputs of `release schema`.
type SchemaOptions struct {
	f *Factory
}

// NewCmdSchema builds `release schema`. runF replaces the work in tests.
func NewCmdSchema(f *Factory, runF func(*SchemaOptions) error) *cobra.Command {
	opts := &SchemaOptions{f: f}
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the pipeline file's JSON Schema, for editor completion",
		Long: `Print the JSON Schema (draft 2020-12) of the pipeline file: every key the loader
accepts with what it means, the allowed values (bump, approval, stage kinds), the
patterns of durations, branches and cron expressions, and each stage kind's with:
settings. It is generated from the loader's own model, so it matches the release
that prints it.

Editors that use yaml-language-server (VS Code's YAML extension, Neovim, Helix,
Zed) read it from a comment on the first line of pipeline.yaml:

  # yaml-language-server: $schema=pipeline.schema.json

A schema cannot check references between names (a service's repo, a stage's
needs), cycles, or a stage kind's own checks: release validate does.`,
		Example: `  release schema > pipeline.schema.json
  release schema | jq '.properties.stages.additionalProperties.properties.uses.enum'`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return writeJSON(f.IO.Out, pipeline.FileSchema(f.Registry()))
		},
	}
}
