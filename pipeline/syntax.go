package pipeline

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// syntaxError turns a YAML parser error ("yaml: line 3: …") into one at the
// place that is wrong, in words a person can act on.
//
// The parser names the line where the enclosing block starts, not the line
// it stopped at: a 3-space indent on line 9 comes out as an error on line 6.
// The line that is wrong is the first one whose prefix of the file fails
// with the same message, found by bisection (a few parses, and only for a
// file that is already refused). A tab in that line's indentation is named
// as a tab; an indentation that lines up with no block above it says so.
func syntaxError(file string, data []byte, err error) *Error {
	line, msg := yamlMessage(err)
	lines := strings.SplitAfter(string(data), "\n")
	line = firstFailing(lines, line, msg)
	pos := Pos{File: file, Line: line, Col: 1}
	if line < 1 || line > len(lines) {
		return &Error{Pos: pos, Msg: msg}
	}
	text := strings.TrimRight(lines[line-1], "\r\n")
	indent := text[:len(text)-len(strings.TrimLeft(text, " \t"))]
	if i := strings.IndexByte(indent, '\t'); i >= 0 {
		pos.Col = i + 1
		return &Error{Pos: pos, Msg: "a tab character indents this line; YAML indents with spaces"}
	}
	if i := strings.IndexByte(text, '\t'); i >= 0 && strings.Contains(msg, "cannot start any token") {
		pos.Col = i + 1
		return &Error{Pos: pos, Msg: "a tab character where YAML expects a value; use spaces"}
	}
	pos.Col = len(indent) + 1
	if hint := indentHint(lines[:line-1], len(indent)); hint != "" && strings.HasPrefix(msg, "did not find expected") {
		msg = hint + ": " + msg
	}
	return &Error{Pos: pos, Msg: msg}
}

// yamlMessage splits the parser's error into its line (1 when it names
// none) and its message.
func yamlMessage(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	rest, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return 1, msg
	}
	n, after, ok := strings.Cut(rest, ": ")
	line, convErr := strconv.Atoi(n)
	if !ok || convErr != nil {
		return 1, msg
	}
	return line, after
}

// firstFailing is the first line at or after from whose prefix of the file
// fails to parse with msg; from when there is none. The parser reads a
// prefix like the whole file up to its end, so the boundary between the
// prefixes that parse and those that fail is where the parser stopped.
func firstFailing(lines []string, from int, msg string) int {
	fails := func(n int) bool {
		var root yaml.Node
		err := yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &root)
		if err == nil {
			return false
		}
		_, m := yamlMessage(err)
		return m == msg
	}
	lo, hi := max(from-1, 0), len(lines) // prefix lo parses (or is empty), hi fails
	if lo >= hi || !fails(hi) {
		return from
	}
	if lo > 0 && fails(lo) {
		return from
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// indentHint says that an indentation of indent spaces lines up with no
// block of the lines above it, naming the indentations that would, or is
// "" when it does line up. The blocks still open at a line are those of
// the lines above it with less indentation than every line between; a list
// item's content ("- name: x") opens one at its own column.
func indentHint(above []string, indent int) string {
	var open []int
	limit := int(^uint(0) >> 1)
	for i := len(above) - 1; i >= 0 && limit > 0; i-- {
		text := strings.TrimRight(above[i], "\r\n")
		body := strings.TrimLeft(text, " ")
		if body == "" || strings.HasPrefix(body, "#") {
			continue
		}
		n := len(text) - len(body)
		if n >= limit {
			continue
		}
		limit = n
		open = append(open, n)
		for strings.HasPrefix(body, "-") {
			rest := strings.TrimLeft(body[1:], " ")
			if len(rest) == len(body)-1 {
				break // "-x" is a scalar, not an item
			}
			n += len(body) - len(rest)
			open = append(open, n)
			body = rest
		}
	}
	if len(open) == 0 || slices.Contains(open, indent) {
		return ""
	}
	slices.Sort(open)
	open = slices.Compact(open)
	want := make([]string, len(open))
	for i, n := range open {
		want[i] = strconv.Itoa(n)
	}
	list := want[0]
	if len(want) > 1 {
		list = strings.Join(want[:len(want)-1], ", ") + " or " + want[len(want)-1]
	}
	return fmt.Sprintf("this line is indented by %d spaces, which lines up with no block above it (%s would)", indent, list)
}
