package repos

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/sweepboard/release/stages"
)

func TestChangelogGolden(t *testing.T) {
	h := history{
		"api": {
			"feat: init", "tag v1.0.0",
			"feat(auth): add login",
			"fix: close the body\n\nThe leak showed under load.",
			"refactor(config): rename keys\n\nBREAKING CHANGE: LISTEN is now ADDR",
			"perf: cache lookups",
			"docs: readme",
			"chore(deps): bump x",
			"Update README by hand",
			"pin",
			"feat: after the release commit",
		},
		"web":    {"chore: init", "feat!: first page", "pin"},
		"worker": {"feat: init", "tag v1.0.0", "pin"},
	}
	set, pinned, norm := h.build(t)
	cls, err := set.Changelogs(context.Background(), "v1.1.0", pinned)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "changelog/notes.md", []byte(norm.Replace(Notes("v1.1.0", cls))))
	b, err := json.MarshalIndent(cls, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "changelog/changelogs.json", []byte(norm.Replace(string(b))+"\n"))

	var summaries string
	for _, c := range cls {
		summaries += c.Summary() + "\n"
	}
	golden(t, "changelog/summaries.txt", []byte(summaries))
}

// After the release is tagged, its changelog is the same without pinned
// commits: the tag marks the release commit, and the previous release tag is
// the one before it, not the release's own.
func TestChangelogOfTaggedRelease(t *testing.T) {
	h := history{
		"api": {"feat: init", "tag v1.0.0", "fix: one", "tag v1.0.1", "feat: later"},
	}
	set, _, norm := h.build(t)
	cls, err := set.Changelogs(context.Background(), "1.0.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := norm.Replace(cls[0].Markdown())
	want := "## api v1.0.1\n\nChanges since v1.0.0, 1 commit.\n\n### Bug fixes\n\n- one (<api#2>)\n"
	if got != want {
		t.Errorf("Markdown:\n%s\nwant:\n%s", got, want)
	}
}

// TestNotesPolicyGolden: which changes the notes list, by the pipeline's
// notes policy, over one history with every kind of commit.
func TestNotesPolicyGolden(t *testing.T) {
	no := false
	h := history{
		"api": {
			"feat: init", "tag v1.0.0",
			"feat(auth): add login",
			"chore(deps): bump x",
			"ci: cache modules",
			"chore(release): 1.0.1",
			"Release v1.0.2",
			"refactor!: drop the v1 routes",
			"build: static binary",
			"Merge the search work (#12)\n\n* feat(search): index titles\n* fix(search): empty query\n* chore: lint",
			"perf: cache lookups (#13)\n\n* perf: cache lookups",
			"Update README by hand",
		},
	}
	tests := []struct {
		name   string
		policy stages.NotesPolicy
	}{
		{"default", stages.NotesPolicy{}},
		{"types-feat-fix-perf", stages.NotesPolicy{Types: []string{"feat", "fix", "perf"}}},
		{"chores-listed-release-commits-not", stages.NotesPolicy{Types: []string{"feat", "fix", "chore"}}},
		{"untyped-off", stages.NotesPolicy{Untyped: &no}},
	}
	set, pinned, norm := h.build(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set.spec.Notes = tt.policy
			cls, err := set.Changelogs(context.Background(), "1.1.0", pinned)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "notes/"+tt.name+".md", []byte(norm.Replace(Notes("v1.1.0", cls))))
		})
	}
}
