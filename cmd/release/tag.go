package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
	"github.com/sweepboard/release/repos"
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

// NewCmdVersion builds `release version` and its `next` verb.
func NewCmdVersion(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Compute release versions",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageErrorf("missing verb: release version next")
		},
	}
	cmd.AddCommand(NewCmdVersionNext(f, nil))
	return cmd
}

// VersionNextOptions are the inputs of `release version next`.
type VersionNextOptions struct {
	f    *Factory
	Bump string
}

// NewCmdVersionNext builds `release version next`.
func NewCmdVersionNext(f *Factory, runF func(*VersionNextOptions) error) *cobra.Command {
	opts := &VersionNextOptions{f: f}
	cmd := &cobra.Command{
		Use:   "next",
		Short: "Print the next release version and why",
		Long: `Print the version the next run would release: the newest release tag over all repos,
bumped. With --bump auto, conventional commits since the last release tag in every
repo decide (feat: minor, fix: patch, ! or BREAKING CHANGE: major; below 1.0.0 a
breaking change bumps the minor), and the repo and commit that drove the bump are
named.`,
		Example: `  release version next
  release version next --bump auto -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return versionNext(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Bump, "bump", "", "major, minor, patch or auto (default: the file's version.bump)")
	return cmd
}

func versionNext(ctx context.Context, opts *VersionNextOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	st, err := f.StoreIfExists(ctx)
	if err != nil {
		return err
	}
	v, err := f.engineFor(p, st).NextVersion(ctx, opts.Bump, "", nil)
	if err != nil {
		return err
	}
	next, _ := v.Detail.(*repos.Next)
	if f.JSON() {
		if next != nil {
			return writeJSON(f.IO.Out, next)
		}
		return writeJSON(f.IO.Out, map[string]string{"version": v.Version, "tag": p.Spec.Version.TagPrefix + v.Version, "reason": v.Reason})
	}
	fmt.Fprintln(f.IO.Out, v.Version)
	fmt.Fprintf(f.IO.ErrOut, "%s\n", v.Reason)
	if next != nil {
		for _, r := range next.Repos {
			since := r.Since
			if since == "" {
				since = "the first commit"
			}
			fmt.Fprintf(f.IO.ErrOut, "  %-12s %d commits since %s, asks for %s\n", r.Repo, r.Commits, since, r.Bump)
		}
	}
	return nil
}
