package dockerbuild

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
)

// ignore is the parsed .dockerignore of a build context, with the docker
// CLI's semantics: patterns are anchored at the context root, `*` and `?`
// stay within one path element, `**` spans any number of them, a pattern
// that matches a directory excludes everything below it, and the last
// matching pattern wins, so `!pattern` re-includes.
type ignore struct {
	patterns []ignorePattern
}

type ignorePattern struct {
	text      string
	exclusion bool // a `!` pattern: matching re-includes
	re        *regexp.Regexp
}

// parseIgnore reads a .dockerignore file.
func parseIgnore(r io.Reader) (*ignore, error) {
	ig := &ignore{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		p := ignorePattern{text: text}
		if strings.HasPrefix(text, "!") {
			p.exclusion = true
			text = strings.TrimSpace(text[1:])
		}
		text = strings.TrimPrefix(path.Clean(text), "/")
		if text == "" || text == "." {
			// "/" or "." would exclude the whole context, Dockerfile
			// included; docker ignores such lines too.
			continue
		}
		re, err := compileIgnore(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: pattern %q: %w", line, p.text, err)
		}
		p.re = re
		ig.patterns = append(ig.patterns, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ig, nil
}

// excluded reports whether the file at name (slash-separated, relative to
// the context root) is left out of the context.
func (ig *ignore) excluded(name string) bool {
	if ig == nil {
		return false
	}
	// The file and every directory above it, since a pattern matching a
	// directory excludes its contents.
	var candidates []string
	for p := name; p != "." && p != ""; p = path.Dir(p) {
		candidates = append(candidates, p)
	}
	excluded := false
	for _, p := range ig.patterns {
		for _, c := range candidates {
			if p.re.MatchString(c) {
				excluded = !p.exclusion
				break
			}
		}
	}
	return excluded
}

// compileIgnore turns one pattern into an anchored regexp.
func compileIgnore(pattern string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch c {
		case '*':
			if i+1 < len(pattern) && pattern[i+1] == '*' {
				for i+1 < len(pattern) && pattern[i+1] == '*' {
					i++
				}
				if i+1 < len(pattern) && pattern[i+1] == '/' {
					i++
					b.WriteString("(.*/)?") // "**/" is zero or more directories
				} else {
					b.WriteString(".*")
				}
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		case '\\':
			if i+1 == len(pattern) {
				return nil, fmt.Errorf("trailing backslash")
			}
			i++
			b.WriteString(regexp.QuoteMeta(string(pattern[i])))
		case '[':
			end := strings.IndexByte(pattern[i+1:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unterminated character class")
			}
			class := pattern[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + class + "]")
			i += end + 1
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
