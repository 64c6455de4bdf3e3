package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// TagOptions are the inputs of `release tag`.
type TagOptions struct {
	f        *Factory
	Version  string
	Parallel int
}

// NewCmdTag builds `release tag`.
func NewCmdTag(f *Factory, runF func(*TagOptions) error) *cobra.Command {
	opts := &TagOptions{f: f}
	cmd := &cobra.Command{
		Use:   "tag --version V",
		Short: "Tag every repo with a release version, all or none",
		Long: `Run the git-tag stage on its own, as a run of kind "tag": an annotated tag on every
repo of the pipeline, at the commits the release of that version was built from
(its record in the state store), or at the branch heads when there is no such
release. Every repo is checked before anything is pushed: a tag that exists at
the same commit is adopted, one at another commit stops the run naming both
commits. A second tag run of the same version pushes nothing.`,
		Example: `  release tag --version 1.4.0
  release tag --version 2.0.0-rc.1 -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Version == "" {
				return usageErrorf("--version is required")
			}
			if runF != nil {
				return runF(opts)
			}
			return tagRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Version, "version", "", "the version to tag (the tag prefix is added)")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 1, "nodes run at once")
	return cmd
}

func tagRun(ctx context.Context, opts *TagOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	if len(e.Pipeline.Spec.Repos) == 0 {
		return usageErrorf("%s has no repos to tag", f.FileName())
	}
	w := f.watch()
	run, err := e.Tag(ctx, engine.TagRequest{Version: opts.Version, Exec: engine.Exec{Parallel: opts.Parallel}}, w.observer())
	return w.report(run, err)
}
