package repos

import (
	"regexp"
	"slices"
	"strings"
)

// Conventional is a commit message read as a Conventional Commit
// (https://www.conventionalcommits.org/en/v1.0.0/).
type Conventional struct {
	Type        string `json:"type"`            // lowercased: feat, fix, chore…; "" when the header does not follow the format
	Scope       string `json:"scope,omitempty"` // the text in parentheses, if any
	Breaking    bool   `json:"breaking"`        // "!" before the colon or a BREAKING CHANGE footer
	Subject     string `json:"subject"`         // the description after ": ", or the whole first line
	BreakingMsg string `json:"breakingMsg,omitempty"`
}

// Level is how much a change moves the version.
type Level int

// Levels in increasing order, so the largest of a set of changes wins.
const (
	None Level = iota
	Patch
	Minor
	Major
)

func (l Level) String() string {
	switch l {
	case Patch:
		return "patch"
	case Minor:
		return "minor"
	case Major:
		return "major"
	}
	return "none"
}

// Level is the bump this commit asks for under semver ≥ 1.0.0: a breaking
// change is major, feat is minor, fix is patch, anything else is none.
func (c Conventional) Level() Level {
	switch {
	case c.Breaking:
		return Major
	case c.Type == "feat":
		return Minor
	case c.Type == "fix":
		return Patch
	}
	return None
}

var headerRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9-]*)(?:\(([^()]*)\))?(!)?: +(\S.*)$`)

// ParseConventional reads a commit message. A message whose first line is
// not "type(scope)!: subject" has an empty Type and the first line as
// Subject; its footers are still read, so a BREAKING CHANGE footer counts
// either way.
func ParseConventional(msg string) Conventional {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	header, body, _ := strings.Cut(strings.TrimLeft(msg, "\n"), "\n")
	header = strings.TrimSpace(header)
	c := Conventional{Subject: header}
	if m := headerRE.FindStringSubmatch(header); m != nil {
		c.Type = strings.ToLower(m[1])
		c.Scope = strings.TrimSpace(m[2])
		c.Breaking = m[3] == "!"
		c.Subject = strings.TrimSpace(m[4])
		if c.Breaking {
			c.BreakingMsg = c.Subject
		}
	}
	for _, line := range strings.Split(body, "\n") {
		for _, key := range []string{"BREAKING CHANGE", "BREAKING-CHANGE"} {
			if rest, ok := strings.CutPrefix(line, key+":"); ok {
				c.Breaking = true
				c.BreakingMsg = strings.TrimSpace(rest)
			}
		}
	}
	return c
}

// Header is the change written back as a conventional header,
// "type(scope)!: subject"; the subject alone for a free-form message.
func (c Conventional) Header() string {
	if c.Type == "" {
		return c.Subject
	}
	h := c.Type
	if c.Scope != "" {
		h += "(" + c.Scope + ")"
	}
	if c.Breaking && c.BreakingMsg == c.Subject {
		h += "!"
	}
	return h + ": " + c.Subject
}

// bodyHeaderRE is a line of a commit body that lists a change of its own:
// a conventional header, after an optional "* " or "- " bullet.
var bodyHeaderRE = regexp.MustCompile(`^(?:[*-] +)?([a-z][a-z0-9-]*(?:\([^()]*\))?!?: +\S.*)$`)

// ParseCommit reads every change a commit message records. The first is
// the message's own header, as ParseConventional reads it. After it come
// the lines of the body that are conventional headers themselves, written
// in lowercase at the start of the line (a "* " or "- " bullet allowed):
// a squash merge lists the commits it squashed so, and release-please
// reads each as a change of its own. The indented lines under such a line
// are its footers; a BREAKING CHANGE footer at the start of a line belongs
// to the nearest change above it. A body line that repeats a change already
// read (a squashed commit named like the pull request's title) is read
// once, and a free-form header over a body that lists changes is the
// squash's title, not a change.
func ParseCommit(msg string) []Conventional {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	header, body, _ := strings.Cut(strings.TrimLeft(msg, "\n"), "\n")
	header = strings.TrimSpace(header)
	first := ParseConventional(header)
	changes := []Conventional{first}
	last := &changes[0]
	for _, line := range strings.Split(body, "\n") {
		indented := line != strings.TrimLeft(line, " \t")
		trimmed := strings.TrimSpace(line)
		if msg, ok := breakingFooter(trimmed); ok && (!indented || len(changes) > 1) {
			last.Breaking, last.BreakingMsg = true, msg
			continue
		}
		if indented {
			continue
		}
		m := bodyHeaderRE.FindStringSubmatch(trimmed)
		if m == nil {
			continue
		}
		c := ParseConventional(m[1])
		if slices.ContainsFunc(changes, func(o Conventional) bool { return sameChange(o, c) }) {
			continue
		}
		changes = append(changes, c)
		last = &changes[len(changes)-1]
	}
	if len(changes) > 1 && first.Type == "" && !first.Breaking {
		changes = changes[1:]
	}
	return changes
}

// breakingFooter reads a BREAKING CHANGE footer.
func breakingFooter(line string) (string, bool) {
	for _, key := range []string{"BREAKING CHANGE", "BREAKING-CHANGE"} {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// prNumberRE is the pull request number a squash merge adds to its title.
var prNumberRE = regexp.MustCompile(` \(#\d+\)$`)

// sameChange reports whether two changes say the same, the number of a
// pull request aside.
func sameChange(a, b Conventional) bool {
	return a.Type == b.Type && a.Scope == b.Scope && a.Breaking == b.Breaking &&
		prNumberRE.ReplaceAllString(a.Subject, "") == prNumberRE.ReplaceAllString(b.Subject, "")
}

// releaseAsRE is release-please's footer that sets the next version.
var releaseAsRE = regexp.MustCompile(`(?i)^release-as: *(\S+)$`)

// ReleaseAs is the version a "Release-As: X.Y.Z" footer of the message
// asks for (the last one, when there are several), or "".
func ReleaseAs(msg string) string {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	_, body, _ := strings.Cut(strings.TrimLeft(msg, "\n"), "\n")
	v := ""
	for _, line := range strings.Split(body, "\n") {
		if m := releaseAsRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			v = m[1]
		}
	}
	return v
}
