package repos

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/sweepboard/release/stages"
)

// Changelog is one repo's changes in a release: the commits reachable from
// the release commit and not from the repo's previous release tag.
type Changelog struct {
	Repo     string  `json:"repo"`
	Tag      string  `json:"tag"`                // this release's tag
	Previous string  `json:"previous,omitempty"` // the previous release tag; "" for the first release
	Commit   string  `json:"commit"`             // the release commit
	Groups   []Group `json:"groups"`             // in the order of groupTitles, empty groups left out
	Commits  int     `json:"commits"`            // all commits, merges included
}

// Group is the entries of one kind of change.
type Group struct {
	Title   string  `json:"title"`
	Entries []Entry `json:"entries"`
}

// Entry is one change of a changelog: a commit, or one of the changes a
// squash commit lists in its body (see ParseCommit), which share its SHA.
type Entry struct {
	Commit string `json:"commit"`
	Conventional
}

// groupTitles are the changelog sections, in order. A commit goes to the
// first that matches: breaking changes first, then by type; commits of other
// types and free-form messages are "Other changes".
var groupTitles = []struct {
	title string
	match func(Conventional) bool
}{
	{"Breaking changes", func(c Conventional) bool { return c.Breaking }},
	{"Features", func(c Conventional) bool { return c.Type == "feat" }},
	{"Bug fixes", func(c Conventional) bool { return c.Type == "fix" }},
	{"Performance", func(c Conventional) bool { return c.Type == "perf" }},
	{"Reverts", func(c Conventional) bool { return c.Type == "revert" }},
	{"Documentation", func(c Conventional) bool { return c.Type == "docs" }},
	{otherTitle, func(Conventional) bool { return true }},
}

const otherTitle = "Other changes"

// Changelogs returns every repo's changelog for version, in repo order.
// The release commit of a repo is commits[repo] when given, else the
// version's tag in that repo when it exists, else the branch head. Which
// changes are listed is the pipeline's notes policy (stages.NotesPolicy).
func (s *Set) Changelogs(ctx context.Context, version string, commits map[string]string) ([]Changelog, error) {
	prefix := s.TagPrefix()
	v, err := ParseVersion(version, prefix)
	if err != nil {
		return nil, err
	}
	tag := prefix + v.String()
	states, err := s.states(ctx, commits)
	if err != nil {
		return nil, err
	}
	out := make([]Changelog, 0, len(states))
	for _, st := range states {
		head := st.head
		if _, ok := commits[st.name]; !ok {
			for _, t := range st.tags {
				if t.Name == tag {
					head = t.Commit
				}
			}
		}
		cl, err := changelog(st.repo, st.name, tag, v, head, st.tags, s.spec.Notes)
		if err != nil {
			return nil, err
		}
		out = append(out, cl)
	}
	return out, nil
}

// changelog lists the changes of one repo from the last release tag before
// v up to head that policy lists, grouped. Merge commits and release
// commits are left out.
func changelog(r *git.Repository, name, tag string, v *semver.Version, head plumbing.Hash, tags []releaseTag, policy stages.NotesPolicy) (Changelog, error) {
	cl := Changelog{Repo: name, Tag: tag, Commit: head.String()}
	st := repoState{tags: tags}
	var base plumbing.Hash
	if t, ok := st.lastBefore(v); ok {
		cl.Previous, base = t.Name, t.Commit
	}
	cs, err := commitsSince(r, head, base)
	if err != nil {
		return Changelog{}, fmt.Errorf("changelog of repo %s: %w", name, err)
	}
	cl.Commits = len(cs)
	groups := make([][]Entry, len(groupTitles))
	for _, c := range cs {
		if c.NumParents() > 1 {
			continue
		}
		for _, conv := range ParseCommit(c.Message) {
			if releaseCommit(conv) || !policy.Lists(conv.Type, conv.Breaking) {
				continue
			}
			for i, g := range groupTitles {
				if g.match(conv) {
					groups[i] = append(groups[i], Entry{Commit: c.Hash.String(), Conventional: conv})
					break
				}
			}
		}
	}
	cl.Groups = []Group{}
	for i, es := range groups {
		if len(es) > 0 {
			cl.Groups = append(cl.Groups, Group{Title: groupTitles[i].title, Entries: es})
		}
	}
	return cl, nil
}

// Markdown renders the repo's section of the release notes; it is also the
// body of the repo's GitHub release.
func (c Changelog) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s %s\n\n", c.Repo, c.Tag)
	switch {
	case c.Previous == "" && c.Commits == 0:
		b.WriteString("No commits.\n")
		return b.String()
	case c.Previous == "":
		fmt.Fprintf(&b, "First release, %s", plural(c.Commits, "commit"))
	case c.Commits == 0:
		fmt.Fprintf(&b, "No changes since %s.\n", c.Previous)
		return b.String()
	default:
		fmt.Fprintf(&b, "Changes since %s, %s", c.Previous, plural(c.Commits, "commit"))
	}
	if len(c.Groups) == 0 {
		// The notes policy left every commit out: say so, rather than
		// promise changes and list none.
		b.WriteString(", none of a kind these notes list.\n")
		return b.String()
	}
	b.WriteString(".\n")
	for _, g := range c.Groups {
		fmt.Fprintf(&b, "\n### %s\n\n", g.Title)
		for _, e := range g.Entries {
			b.WriteString("- ")
			switch {
			case g.Title == otherTitle && e.Type != "":
				// The group does not say the type here, so the line does.
				b.WriteString(e.Type)
				if e.Scope != "" {
					fmt.Fprintf(&b, "(%s)", e.Scope)
				}
				b.WriteString(": ")
			case e.Scope != "":
				fmt.Fprintf(&b, "**%s:** ", e.Scope)
			}
			b.WriteString(e.Subject)
			fmt.Fprintf(&b, " (%s)", e.Commit[:7])
			if g.Title == groupTitles[0].title && e.BreakingMsg != "" && e.BreakingMsg != e.Subject {
				fmt.Fprintf(&b, ": %s", e.BreakingMsg)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Summary is one line for a tag message: the commits since the previous
// release tag, counted by type.
func (c Changelog) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", c.Repo, plural(c.Commits, "commit"))
	if c.Previous != "" {
		fmt.Fprintf(&b, " since %s", c.Previous)
	}
	var parts []string
	for _, g := range c.Groups {
		parts = append(parts, fmt.Sprintf("%s %d", strings.ToLower(g.Title), len(g.Entries)))
	}
	if len(parts) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	return b.String()
}

// Notes are the release notes of a whole release: a title and every repo's
// section, in the order given.
func Notes(tag string, cls []Changelog) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", tag)
	for _, c := range cls {
		b.WriteString("\n")
		b.WriteString(c.Markdown())
	}
	return b.String()
}

// tagSummary is the default summary of a tag message. A changelog that
// cannot be computed only costs the summary, not the tag.
func (s *Set) tagSummary(r *git.Repository, name string, v *semver.Version, commit plumbing.Hash) string {
	tags, err := releaseTags(r, s.TagPrefix())
	if err == nil {
		var cl Changelog
		if cl, err = changelog(r, name, s.TagPrefix()+v.String(), v, commit, tags, s.spec.Notes); err == nil {
			return cl.Summary()
		}
	}
	s.logger.Warn("tag summary", "repo", name, "err", err)
	return name
}

// releaseSubjectRE is the subject of a commit that cuts a release rather
// than changes anything: "1.4.0", "release v1.4.0", "bump version to 1.4.0".
var releaseSubjectRE = regexp.MustCompile(`(?i)^(?:(?:release|releasing|prepare release|bump version to|version)\s+)?v?\d+\.\d+\.\d+\S*(?:\s|$)`)

// releaseCommit reports whether a change is a release commit, such as
// release-please's "chore(main): release 1.4.0" or standard-version's
// "chore(release): 1.4.0": release notes never list one. (release itself
// tags, it makes no commits.)
func releaseCommit(c Conventional) bool {
	switch c.Type {
	case "", "chore", "release", "build", "ci":
		return releaseSubjectRE.MatchString(c.Subject)
	}
	return false
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
