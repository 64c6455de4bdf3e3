package dockerbuild

import (
	"encoding/json"
	"path"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// dockerfileReachable says whether a step of the build could read the
// Dockerfile out of the context: a COPY or ADD whose source is the context,
// a directory holding the Dockerfile, a pattern matching it, or anything
// release cannot tell (variables, heredocs, bind mounts, ONBUILD, another
// escape character). BuildKit keeps the uploaded Dockerfile in the
// context, so a Dockerfile that .dockerignore names is built by BuildKit
// only when no step can reach it.
func (bc *buildContext) dockerfileReachable() bool {
	for _, f := range bc.files {
		if f.name != bc.dockerfile {
			continue
		}
		if f.mode == filemode.Symlink {
			return true
		}
		text, err := readAll(f.blob)
		if err != nil {
			return true
		}
		return reaches(text, bc.dockerfile)
	}
	return true
}

// reaches reads the instructions of a Dockerfile's text and says whether
// one could copy the file at df (its path in the context) into the image,
// erring towards yes.
func reaches(text, df string) bool {
	df = path.Clean(df)
	var line strings.Builder
	for raw := range strings.Lines(text) {
		l := strings.TrimSpace(raw)
		if line.Len() == 0 && (l == "" || strings.HasPrefix(l, "#")) {
			if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(l, " ", "")), "#escape=") {
				return true
			}
			continue
		}
		if strings.HasSuffix(l, "\\") {
			line.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		line.WriteString(l)
		if instructionReaches(line.String(), df) {
			return true
		}
		line.Reset()
	}
	return line.Len() > 0 && instructionReaches(line.String(), df)
}

func instructionReaches(ins, df string) bool {
	if strings.Contains(ins, "<<") {
		return true // a heredoc: its lines are not instructions
	}
	fields := strings.Fields(ins)
	if len(fields) == 0 {
		return false
	}
	switch strings.ToUpper(fields[0]) {
	case "ONBUILD":
		return true
	case "RUN":
		return strings.Contains(ins, "--mount")
	case "COPY", "ADD":
	default:
		return false
	}
	rest := strings.TrimSpace(ins[len(fields[0]):])
	for strings.HasPrefix(rest, "--") {
		flag, tail, _ := strings.Cut(rest, " ")
		if strings.HasPrefix(flag, "--from") {
			return false // from another stage or image, not the context
		}
		rest = strings.TrimSpace(tail)
	}
	var args []string
	if strings.HasPrefix(rest, "[") {
		if err := json.Unmarshal([]byte(rest), &args); err != nil {
			return true
		}
	} else {
		args = strings.Fields(rest)
	}
	if len(args) < 2 {
		return true
	}
	for _, src := range args[:len(args)-1] {
		if strings.Contains(src, "$") {
			return true
		}
		if strings.Contains(src, "://") {
			continue // ADD of a URL
		}
		src = strings.TrimPrefix(path.Clean("/"+src), "/")
		if src == "" || src == "." || src == df || strings.HasPrefix(df, src+"/") {
			return true
		}
		if strings.ContainsAny(src, "*?[") {
			// The pattern matches the Dockerfile or a directory above it.
			for p := df; p != "."; p = path.Dir(p) {
				if ok, err := path.Match(src, p); ok || err != nil {
					return true
				}
			}
		}
	}
	return false
}
