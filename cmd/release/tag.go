package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
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
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	if len(p.Spec.Repos) == 0 {
		return usageErrorf("%s has no repos to tag", f.FileName())
	}
	v, err := repos.ParseVersion(opts.Version, p.Spec.Version.TagPrefix)
	if err != nil {
		return usageErrorf("--version: %v", err)
	}
	kind, err := f.Registry().Lookup("git-tag")
	if err != nil {
		return err
	}
	st, err := f.Store(ctx)
	if err != nil {
		return err
	}
	commits, err := releaseCommits(ctx, f, p, st, v.String())
	if err != nil {
		return err
	}
	only := *p
	only.Stages = map[string]*pipeline.Stage{"tag": {Name: "tag", Uses: "git-tag", Impl: kind.New()}}
	plan, err := only.Plan(pipeline.Slice{})
	if err != nil {
		return err
	}
	run := pipeline.NewRun("tag", &only, plan, time.Now())
	run.Version, run.Commits = v.String(), commits
	return execute(ctx, f, &only, plan, run, execOptions{parallel: opts.Parallel, create: true})
}

// releaseCommits are the commits a version was built from, from its release
// record, or the branch heads when the version has no release yet.
func releaseCommits(ctx context.Context, f *Factory, p *pipeline.Pipeline, st pipeline.Store, version string) (map[string]string, error) {
	rel, err := st.Release(ctx, version)
	switch {
	case err == nil && len(rel.Commits) > 0:
		return rel.Commits, nil
	case err != nil && !errors.Is(err, pipeline.ErrNotFound):
		return nil, err
	}
	return repos.New(p.Spec, f.WorkDir()).Heads(ctx)
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
	v, err := resolveVersion(ctx, f, p, st, opts.Bump, "", nil)
	if err != nil {
		return err
	}
	if f.JSON() {
		if v.Next != nil {
			return writeJSON(f.IO.Out, v.Next)
		}
		return writeJSON(f.IO.Out, map[string]string{"version": v.Version, "tag": p.Spec.Version.TagPrefix + v.Version, "reason": v.Reason})
	}
	fmt.Fprintln(f.IO.Out, v.Version)
	printVersionReason(f.IO.ErrOut, v)
	return nil
}

func printVersionReason(w io.Writer, v versionChoice) {
	fmt.Fprintf(w, "%s\n", v.Reason)
	if v.Next == nil {
		return
	}
	for _, r := range v.Next.Repos {
		since := r.Since
		if since == "" {
			since = "the first commit"
		}
		fmt.Fprintf(w, "  %-12s %d commits since %s, asks for %s\n", r.Repo, r.Commits, since, r.Bump)
	}
}
