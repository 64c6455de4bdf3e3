package pipeline_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/stages"
)

// TestLoadNotes: the notes policy loads as written, and what it cannot
// mean is refused at its place.
func TestLoadNotes(t *testing.T) {
	no := false
	tests := []struct {
		name string
		src  string
		want stages.NotesPolicy
		errs []string
	}{
		{name: "absent is the default", src: "name: p\nstages: {a: {uses: exec}}\n"},
		{
			name: "types and untyped",
			src:  "name: p\nnotes: {types: [feat, fix, perf, security-fix], untyped: false}\nstages: {a: {uses: exec}}\n",
			want: stages.NotesPolicy{Types: []string{"feat", "fix", "perf", "security-fix"}, Untyped: &no},
		},
		{
			name: "an empty list lists breaking changes only",
			src:  "name: p\nnotes: {types: []}\nstages: {a: {uses: exec}}\n",
			want: stages.NotesPolicy{Types: []string{}},
		},
		{
			name: "bad types, each at its place",
			src: `
name: p
notes:
  types: [feat, Fix, feat, "chore(deps)", ""]
stages: {a: {uses: exec}}
`,
			errs: []string{
				`pipeline.yaml:3:17: notes.types: "Fix" is not a commit type (lowercase letters, digits and dashes, like feat or fix)`,
				`pipeline.yaml:3:22: notes.types: "feat" is listed twice`,
				`pipeline.yaml:3:28: notes.types: "chore(deps)" is not a commit type (lowercase letters, digits and dashes, like feat or fix)`,
				`pipeline.yaml:3:43: notes.types: "" is not a commit type (lowercase letters, digits and dashes, like feat or fix)`,
			},
		},
		{
			name: "strict keys and shapes",
			src:  "name: p\nnotes: {types: feat, untyped: maybe, hide: [chore]}\nstages: {a: {uses: exec}}\n",
			errs: []string{
				`pipeline.yaml:2:16: notes.types: want a list, got "feat"`,
				`pipeline.yaml:2:31: notes.untyped: want a true or false, got "maybe"`,
				`pipeline.yaml:2:38: unknown key "hide" in notes (known: types, untyped)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parse(tt.src)
			if diff := cmp.Diff(tt.errs, errorLines(t, err)); diff != "" {
				t.Fatalf("errors (-want +got):\n%s", diff)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, p.Spec.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNotesPolicyLists: which changes a policy lists.
func TestNotesPolicyLists(t *testing.T) {
	no := false
	tests := []struct {
		name     string
		policy   stages.NotesPolicy
		typ      string
		breaking bool
		want     bool
	}{
		{"default lists feat", stages.NotesPolicy{}, "feat", false, true},
		{"default lists refactor", stages.NotesPolicy{}, "refactor", false, true},
		{"default leaves chores out", stages.NotesPolicy{}, "chore", false, false},
		{"default leaves ci out", stages.NotesPolicy{}, "ci", false, false},
		{"a breaking chore is listed", stages.NotesPolicy{}, "chore", true, true},
		{"default lists free-form messages", stages.NotesPolicy{}, "", false, true},
		{"types are the list", stages.NotesPolicy{Types: []string{"feat"}}, "fix", false, false},
		{"types may add chores", stages.NotesPolicy{Types: []string{"chore"}}, "chore", false, true},
		{"untyped false", stages.NotesPolicy{Untyped: &no}, "", false, false},
	}
	for _, tt := range tests {
		if got := tt.policy.Lists(tt.typ, tt.breaking); got != tt.want {
			t.Errorf("%s: Lists(%q, %v) = %v, want %v", tt.name, tt.typ, tt.breaking, got, tt.want)
		}
	}
}
