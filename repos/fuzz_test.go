package repos

import (
	"regexp"
	"strings"
	"testing"
)

// hostileVersions are versions given by hand that must be refused: options,
// shell metacharacters, whitespace and control characters.
var hostileVersions = []string{
	"--force", "-1.0.0", "-v1.0.0", "v1.0.0;rm -rf /", "1.0.0;id", "1.0.0 && id", "1.0.0|id", "1.0.0&",
	"$(id)", "1.0.0-$(id)", "1.0.0+`id`", "`id`", "1.0.0\n", "1.0.0\nid", "1.0.0\r", " 1.0.0", "1.0.0 ",
	"1.0.0\x00", "1.0.0-rc.1;id", "1.0.0>out", "1.0.0<in", "1.0.0'", "1.0.0\"", "1.0.0\\", "1.0.0*", "~1.0.0", "^1.0.0",
}

// FuzzParseVersion: any input parses or is refused. What parses
//   - was already canonical: it prints back as given, less the prefix;
//   - reparses to an equal version;
//   - is made of semver's characters only, so neither the version nor its
//     tag can carry shell metacharacters or read as an option.
//
// What is refused names the input in the error.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.2.3", "v1.2.3", "2.0.0-rc.1", "1.0.0+build.5", "1.0.0-alpha.beta-1+exp.sha.5114f85", "v", "--1", "1.2", "01.2.3", "1.2.3-01", "1.2.3\n; rm -rf /", "vv1.2.3", "V1.2.3"} {
		f.Add(s)
	}
	for _, s := range hostileVersions {
		f.Add(s)
	}
	semverChars := regexp.MustCompile(`^[0-9A-Za-z.+-]+$`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, prefix := range []string{"v", ""} {
			v, err := ParseVersion(s, prefix)
			if err != nil {
				if !strings.Contains(err.Error(), "parse version ") {
					t.Fatalf("error %q does not say what it parsed", err)
				}
				continue
			}
			if got, want := v.String(), strings.TrimPrefix(s, prefix); got != want {
				t.Fatalf("%q (prefix %q) parsed to %s: not as given", s, prefix, got)
			}
			again, err := ParseVersion(v.String(), prefix)
			if err != nil || !again.Equal(v) {
				t.Fatalf("%q parsed to %s, which reparses to %v, %v", s, v, again, err)
			}
			if !semverChars.MatchString(v.String()) || strings.HasPrefix(v.String(), "-") {
				t.Fatalf("version %q carries more than semver's characters", v)
			}
		}
	})
}

// FuzzParseConventional: any commit message gives a result without
// panicking, and
//   - the subject and scope are taken from the message verbatim, on one line;
//   - the type is lowercase letters, digits and dashes;
//   - the level follows the fields (breaking is major, feat minor, fix patch);
//   - the header printed back from the result parses to the same result.
func FuzzParseConventional(f *testing.F) {
	for _, s := range []string{
		"feat: x", "fix(api)!: y", "chore: z\n\nBREAKING CHANGE: w", "not conventional", "feat(: x", ": x", "feat!:", "--help",
		"FEAT(Api):   spaced  ", "\n\nfeat: after blank lines", "fix: crlf\r\n\r\nBREAKING-CHANGE: footer\r\n",
		"feat: $(touch canary) `id` ; rm -rf / | sh", "fix(a;b): --force\n\n$(id)", "revert: \"quoted\" 'single'",
		"feat(scope with spaces): x", "feat((nested)): x", "feat:no space", "feat : space before", "\x00feat: nul", "feat: ünïcödé ✓",
	} {
		f.Add(s)
	}
	typeRE := regexp.MustCompile(`^([a-z][a-z0-9-]*)?$`)
	f.Fuzz(func(t *testing.T, msg string) {
		c := ParseConventional(msg)
		norm := strings.ReplaceAll(msg, "\r\n", "\n")
		if !strings.Contains(norm, c.Subject) || !strings.Contains(norm, c.Scope) || !strings.Contains(norm, c.BreakingMsg) {
			t.Fatalf("%q: subject %q, scope %q or breaking message %q not in the message verbatim", msg, c.Subject, c.Scope, c.BreakingMsg)
		}
		if strings.Contains(c.Subject, "\n") || strings.Contains(c.Scope, "\n") {
			t.Fatalf("%q: subject %q or scope %q spans lines", msg, c.Subject, c.Scope)
		}
		if !typeRE.MatchString(c.Type) {
			t.Fatalf("%q: type %q", msg, c.Type)
		}
		want := None
		switch {
		case c.Breaking:
			want = Major
		case c.Type == "feat":
			want = Minor
		case c.Type == "fix":
			want = Patch
		}
		if c.Level() != want || c.Level().String() == "" {
			t.Fatalf("%q: level %v, want %v", msg, c.Level(), want)
		}
		if c.Type == "" {
			return
		}
		header := c.Type
		if c.Scope != "" {
			header += "(" + c.Scope + ")"
		}
		if c.Breaking {
			header += "!"
		}
		again := ParseConventional(header + ": " + c.Subject)
		if again.Type != c.Type || again.Scope != c.Scope || again.Subject != c.Subject || again.Breaking != c.Breaking {
			t.Fatalf("%q parsed to %+v; its header %q parses to %+v", msg, c, header+": "+c.Subject, again)
		}
	})
}
