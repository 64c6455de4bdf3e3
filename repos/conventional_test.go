package repos

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConventional(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want Conventional
	}{
		{"feat", "feat: add login", Conventional{Type: "feat", Subject: "add login"}},
		{"fix with scope", "fix(auth): expire tokens\n\nbody", Conventional{Type: "fix", Scope: "auth", Subject: "expire tokens"}},
		{"bang", "feat(api)!: drop v1", Conventional{Type: "feat", Scope: "api", Breaking: true, Subject: "drop v1", BreakingMsg: "drop v1"}},
		{"bang without scope", "refactor!: rename", Conventional{Type: "refactor", Breaking: true, Subject: "rename", BreakingMsg: "rename"}},
		{"footer", "refactor: move\n\nBREAKING CHANGE: config keys renamed", Conventional{Type: "refactor", Breaking: true, Subject: "move", BreakingMsg: "config keys renamed"}},
		{"hyphen footer", "fix: x\n\nBREAKING-CHANGE: y\nRefs: #1", Conventional{Type: "fix", Breaking: true, Subject: "x", BreakingMsg: "y"}},
		{"upper type", "FEAT: shout", Conventional{Type: "feat", Subject: "shout"}},
		{"crlf", "fix: win\r\n\r\nBREAKING CHANGE: eol\r\n", Conventional{Type: "fix", Breaking: true, Subject: "win", BreakingMsg: "eol"}},
		{"not conventional", "Merge branch 'main'", Conventional{Subject: "Merge branch 'main'"}},
		{"no space after colon", "feat:nospace", Conventional{Subject: "feat:nospace"}},
		{"empty description", "feat: ", Conventional{Subject: "feat:"}},
		{"lowercase footer is not breaking", "fix: a\n\nbreaking change: no", Conventional{Type: "fix", Subject: "a"}},
		{"footer on a free-form message", "Update deps\n\nBREAKING CHANGE: node 20", Conventional{Breaking: true, Subject: "Update deps", BreakingMsg: "node 20"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ParseConventional(tt.msg)); diff != "" {
				t.Errorf("ParseConventional(%q) (-want +got):\n%s", tt.msg, diff)
			}
		})
	}
}

func TestLevel(t *testing.T) {
	tests := []struct {
		msg  string
		want Level
	}{
		{"feat: a", Minor},
		{"fix: a", Patch},
		{"perf: a", None},
		{"chore!: a", Major},
		{"docs: a\n\nBREAKING CHANGE: b", Major},
		{"whatever", None},
	}
	for _, tt := range tests {
		if got := ParseConventional(tt.msg).Level(); got != tt.want {
			t.Errorf("Level(%q) = %s, want %s", tt.msg, got, tt.want)
		}
	}
}
