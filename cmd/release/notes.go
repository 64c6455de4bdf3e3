package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// NotesOptions are the inputs of `release notes`.
type NotesOptions struct {
	f       *Factory
	Version string
	Bump    string
}

// NewCmdNotes builds `release notes`.
func NewCmdNotes(f *Factory, runF func(*NotesOptions) error) *cobra.Command {
	opts := &NotesOptions{f: f}
	cmd := &cobra.Command{
		Use:   "notes [VERSION]",
		Short: "Print the release notes per repo, before or after a release",
		Long: `Print the release notes of VERSION per repo: the changes from the release tag before
it to its tag (or to the commits its release record pinned). Without VERSION, the notes
the next release would have, from the last release tag to the branch heads. They are the
notes the github-release stage publishes. Which commit types are listed is the pipeline
file's notes: {types: […], untyped: …}; chores, CI and release commits are left out by
default, a breaking change is always listed, and each conventional line in a squash
commit's body is a change of its own. With -o json: version, tag, upcoming, reason,
repos (each repo, tag, previous, commit, commits, groups (each title, entries)).`,
		Example: `  release notes
  release notes 1.4.0
  release notes v1.4.0 -o json | jq '.repos[].groups[].entries[].subject'`,
		Args: rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				opts.Version = args[0]
			}
			if runF != nil {
				return runF(opts)
			}
			return notesRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Bump, "bump", "", "the next release's bump, without VERSION: major, minor, patch or auto")
	return cmd
}

func notesRun(ctx context.Context, opts *NotesOptions) error {
	f := opts.f
	if opts.Version != "" && opts.Bump != "" {
		return usageErrorf("--bump is for the next release's notes; VERSION names a released one")
	}
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	st, err := f.StoreIfExists(ctx)
	if err != nil {
		return err
	}
	// A store that does not exist yet knows no release: it is not made.
	notes, err := f.engineFor(p, st).Notes(ctx, engine.NotesRequest{Version: opts.Version, Bump: opts.Bump})
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, notes)
	}
	if notes.Upcoming {
		fmt.Fprintf(f.IO.ErrOut, "not released yet: the next release would be %s (%s)\n", notes.Version, notes.Reason)
	}
	fmt.Fprint(f.IO.Out, notes.Markdown)
	return nil
}
