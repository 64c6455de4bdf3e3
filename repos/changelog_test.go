package repos

import (
	"context"
	"encoding/json"
	"testing"
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
