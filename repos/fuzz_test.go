package repos

import (
	"strings"
	"testing"
)

// FuzzParseVersion: any input parses or is refused, and what parses prints
// back to a version that parses to the same thing.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.2.3", "v1.2.3", "2.0.0-rc.1", "1.0.0+build.5", "v", "--1", "1.2", "1.2.3\n; rm -rf /"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s, "v")
		if err != nil {
			return
		}
		again, err := ParseVersion(v.String(), "v")
		if err != nil || !again.Equal(v) {
			t.Fatalf("%q parsed to %s, which reparses to %v, %v", s, v, again, err)
		}
		if strings.ContainsAny(v.String(), " \n;$`") {
			t.Fatalf("version %q carries shell metacharacters", v)
		}
	})
}

// FuzzParseConventional: any commit message gives a result without
// panicking, and the level is one of the known ones.
func FuzzParseConventional(f *testing.F) {
	for _, s := range []string{"feat: x", "fix(api)!: y", "chore: z\n\nBREAKING CHANGE: w", "not conventional", "feat(: x", ": x", "feat!:", "--help"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		c := ParseConventional(msg)
		if l := c.Level(); l.String() == "" {
			t.Fatalf("level %d of %q has no name", l, msg)
		}
	})
}
