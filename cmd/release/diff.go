package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/engine"
)

// DiffOptions are the inputs of `release diff`.
type DiffOptions struct {
	f    *Factory
	A, B string
}

// NewCmdDiff builds `release diff`.
func NewCmdDiff(f *Factory, runF func(*DiffOptions) error) *cobra.Command {
	opts := &DiffOptions{f: f}
	return &cobra.Command{
		Use:   "diff A B",
		Short: "What changes from one release to another: commits per repo, images",
		Long: `Compare two releases. A and B are versions, or environments (the release an
environment runs now). Per repo, the commits B has and A has not (and the other way
round when B is older), and which images changed (digest A → B) and which stayed.
With -o json: a, b (each name, environment, version, runId, commits, images), repos
(each repo, from, to, added, removed (each sha, subject)), changed (each service,
from, to), unchanged (each service, image).`,
		Example: `  release diff staging prod
  release diff 1.3.0 1.4.0 -o json`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.A, opts.B = args[0], args[1]
			if runF != nil {
				return runF(opts)
			}
			return diffRun(cmd.Context(), opts)
		},
	}
}

func diffRun(ctx context.Context, opts *DiffOptions) error {
	f := opts.f
	e, err := f.Engine(ctx)
	if err != nil {
		return err
	}
	d, err := e.Diff(ctx, opts.A, opts.B)
	if err != nil {
		return err
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, d)
	}
	w := f.IO.Out
	fmt.Fprintf(w, "%s → %s\n", sideName(d.A), sideName(d.B))
	for _, r := range d.Repos {
		fmt.Fprintln(w)
		switch {
		case r.From == "":
			fmt.Fprintf(w, "%s: - → %s (%s records no commit of it)\n", r.Repo, short(r.To), sideName(d.A))
		case r.To == "":
			fmt.Fprintf(w, "%s: %s → - (%s records no commit of it)\n", r.Repo, short(r.From), sideName(d.B))
		case len(r.Added) == 0 && len(r.Removed) == 0:
			fmt.Fprintf(w, "%s: no changes (%s)\n", r.Repo, short(r.To))
		default:
			fmt.Fprintf(w, "%s: %s → %s\n", r.Repo, short(r.From), short(r.To))
		}
		printCommits(w, "+", r.Added)
		printCommits(w, "-", r.Removed)
	}
	if len(d.Changed) > 0 {
		fmt.Fprintln(w, "\nimages changed")
		for _, c := range d.Changed {
			fmt.Fprintf(w, "  %s\t%s → %s\n", c.Service, orDash(c.From), orDash(c.To))
		}
	}
	if len(d.Unchanged) > 0 {
		fmt.Fprintln(w, "\nimages unchanged")
		for _, u := range d.Unchanged {
			fmt.Fprintf(w, "  %s\t%s\n", u.Service, u.Image)
		}
	}
	return nil
}

// sideName is a side of a diff for people: "1.4.0", or "prod (1.4.0)".
func sideName(s engine.DiffSide) string {
	if s.Environment == "" {
		return s.Version
	}
	return fmt.Sprintf("%s (%s)", s.Environment, orDash(s.Version))
}

func printCommits(w io.Writer, sign string, cs []engine.Commit) {
	for _, c := range cs {
		fmt.Fprintf(w, "  %s %s %s\n", sign, short(c.SHA), c.Subject)
	}
}

// short is a commit's short SHA, or "-" for none.
func short(sha string) string {
	if sha == "" {
		return "-"
	}
	return sha[:min(7, len(sha))]
}
