package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
	"github.com/sweepboard/release/repos"
)

// VersionOptions are the inputs of `release version` (and `release
// --version`).
type VersionOptions struct {
	f *Factory
}

// NewCmdVersion builds `release version`, which prints the version of
// release itself, and its `next` verb.
func NewCmdVersion(f *Factory, runF func(*VersionOptions) error) *cobra.Command {
	opts := &VersionOptions{f: f}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of release; version next computes the next release version",
		Long: `Print the version of this release binary, the commit it was built from (and
whether that checkout had changes) and the Go version that built it, from the
build information the Go toolchain records. With -o json: version, commit,
commitTime, modified, goVersion, platform. release --version prints the same.`,
		Example: `  release version
  release version -o json | jq -r .commit
  release version next --bump auto`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown verb %q: release version prints the version, release version next computes the next one", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return versionRun(opts)
		},
	}
	cmd.AddCommand(NewCmdVersionNext(f, nil))
	return cmd
}

// buildInfo is the documented JSON shape of `release version -o json`.
type buildInfo struct {
	Version    string `json:"version"`              // the main module's version, "(devel)" for a build from a checkout
	Commit     string `json:"commit"`               // vcs.revision, "" when the build did not record one
	CommitTime string `json:"commitTime,omitempty"` // vcs.time
	Modified   bool   `json:"modified"`             // vcs.modified: the checkout had changes
	GoVersion  string `json:"goVersion"`
	Platform   string `json:"platform"` // GOOS/GOARCH
}

// readBuildInfo is what the Go toolchain recorded in this binary.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := info.Main.Version; v != "" {
		b.Version = v
	}
	if info.GoVersion != "" {
		b.GoVersion = info.GoVersion
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.CommitTime = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

func versionRun(opts *VersionOptions) error {
	f := opts.f
	b := readBuildInfo()
	if f.JSON() {
		return writeJSON(f.IO.Out, b)
	}
	commit := b.Commit
	switch {
	case commit == "":
		commit = "unknown (not built from a git checkout)"
	case b.Modified:
		commit += " (modified)"
	}
	if b.CommitTime != "" {
		commit += " " + b.CommitTime
	}
	fmt.Fprintf(f.IO.Out, "release %s\ncommit %s\ngo %s %s\n", b.Version, commit, b.GoVersion, b.Platform)
	return nil
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
named.

When an auto bump finds no feat, fix or breaking change there is nothing to
release: stdout is empty (with -o json: the answer, version "" and
nothingToRelease true), the reason goes to stderr, and the exit code is 8.`,
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

// nextView is the documented JSON shape of `release version next -o json`:
// the repos' account of the choice, and whether there is nothing to
// release.
type nextView struct {
	*repos.Next
	NothingToRelease bool `json:"nothingToRelease"`
}

// plainNext is that shape for a pipeline without repos.
type plainNext struct {
	Version          string `json:"version"`
	Tag              string `json:"tag"`
	Reason           string `json:"reason"`
	NothingToRelease bool   `json:"nothingToRelease"`
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
	nothing := errors.Is(err, engine.ErrNothingToRelease)
	if err != nil && !nothing {
		return err
	}
	next, _ := v.Detail.(*repos.Next)
	if nothing {
		err = silent(&codedError{code: exitNothing, err: err})
	}
	if f.JSON() {
		if next != nil {
			return errors.Join(writeJSON(f.IO.Out, nextView{Next: next, NothingToRelease: nothing}), err)
		}
		plain := plainNext{Version: v.Version, Reason: v.Reason, NothingToRelease: nothing}
		if v.Version != "" {
			plain.Tag = p.Spec.Version.TagPrefix + v.Version
		}
		return errors.Join(writeJSON(f.IO.Out, plain), err)
	}
	if nothing {
		fmt.Fprintf(f.IO.ErrOut, "nothing to release: %s\n", v.Reason)
	} else {
		fmt.Fprintln(f.IO.Out, v.Version)
		fmt.Fprintf(f.IO.ErrOut, "%s\n", v.Reason)
	}
	if next != nil {
		for _, r := range next.Repos {
			since := r.Since
			if since == "" {
				since = "the first commit"
			}
			fmt.Fprintf(f.IO.ErrOut, "  %-12s %d commits since %s, asks for %s\n", r.Repo, r.Commits, since, r.Bump)
		}
	}
	return err
}

// addVersionFlag gives root a --version flag that prints what `release
// version` prints (-o json included): root runs it, or its help.
func addVersionFlag(root *cobra.Command, f *Factory) {
	show := root.Flags().Bool("version", false, "print the version of release (as release version)")
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if *show {
			return versionRun(&VersionOptions{f: f})
		}
		return cmd.Help()
	}
}
