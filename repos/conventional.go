package repos

import (
	"regexp"
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
