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

func TestParseCommit(t *testing.T) {
	feat := func(scope, subject string) Conventional {
		return Conventional{Type: "feat", Scope: scope, Subject: subject}
	}
	fix := func(subject string) Conventional { return Conventional{Type: "fix", Subject: subject} }
	tests := []struct {
		name string
		msg  string
		want []Conventional
	}{
		{"one change", "feat: a\n\nsome body", []Conventional{feat("", "a")}},
		{"release-please's extra changes at the bottom", "feat: adds v4 UUID\n\nThis adds support.\n\nfix(utils): unicode no longer throws\n  PiperOrigin-RevId: 345559154\n  BREAKING-CHANGE: encode no longer throws.\n\nfeat(utils): update encode\n  Source-Link: x",
			[]Conventional{feat("", "adds v4 UUID"), {Type: "fix", Scope: "utils", Subject: "unicode no longer throws", Breaking: true, BreakingMsg: "encode no longer throws."}, feat("utils", "update encode")}},
		{"a squash's bullets under a conventional title", "feat: login (#12)\n\n* feat: login\n* fix: typo\n- docs: readme",
			[]Conventional{feat("", "login (#12)"), fix("typo"), {Type: "docs", Subject: "readme"}}},
		{"a free-form title over listed changes is no change", "Merge the login work (#12)\n\n* feat: login\n* fix: typo",
			[]Conventional{feat("", "login"), fix("typo")}},
		{"a free-form message alone is one change", "Update README by hand\n\nwith words", []Conventional{{Subject: "Update README by hand"}}},
		{"footers and indented lines are no changes", "fix: a\n\nSigned-off-by: T <t@example.com>\nRefs: #1\n  feat: indented\nFEAT: shouted",
			[]Conventional{fix("a")}},
		{"a breaking footer belongs to the change above it", "feat: a\n\n* fix: b\n\nBREAKING CHANGE: b changed",
			[]Conventional{feat("", "a"), {Type: "fix", Subject: "b", Breaking: true, BreakingMsg: "b changed"}}},
		{"a breaking footer before the list is the title's", "chore: a\n\nBREAKING CHANGE: gone\n\n* feat: b",
			[]Conventional{{Type: "chore", Subject: "a", Breaking: true, BreakingMsg: "gone"}, feat("", "b")}},
		{"a breaking bang in the body", "Squash (#3)\n\n* feat(api)!: drop v1",
			[]Conventional{{Type: "feat", Scope: "api", Subject: "drop v1", Breaking: true, BreakingMsg: "drop v1"}}},
		{"crlf", "feat: a\r\n\r\n* fix: b\r\n", []Conventional{feat("", "a"), fix("b")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ParseCommit(tt.msg)); diff != "" {
				t.Errorf("ParseCommit(%q) (-want +got):\n%s", tt.msg, diff)
			}
		})
	}
}

func TestReleaseAs(t *testing.T) {
	tests := []struct{ msg, want string }{
		{"chore: release\n\nRelease-As: 2.0.0", "2.0.0"},
		{"chore: x\n\nrelease-as: v1.4.0\r\n", "v1.4.0"},
		{"chore: x\n\nRelease-As: 1.0.0\nRelease-As: 1.1.0", "1.1.0"},
		{"Release-As: 3.0.0", ""}, // a header, not a footer
		{"fix: y\n\nthe release-as: footer is explained here", ""},
		{"feat: z", ""},
	}
	for _, tt := range tests {
		if got := ReleaseAs(tt.msg); got != tt.want {
			t.Errorf("ReleaseAs(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}
