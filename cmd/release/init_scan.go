package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/sweepboard/release/repos"
)

// foundRepo is what `release init` learnt about one repo.
type foundRepo struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Branch string `json:"branch"`
	// Dockerfile is the path of the Dockerfile inside the repo, "" when
	// none was found or the repo could not be read (a URL).
	Dockerfile string `json:"dockerfile,omitempty"`
	Port       int    `json:"port,omitempty"`

	clone       string // the clone's directory; "" for a URL
	branchGuess bool   // the branch was not read from the repo
}

// dockerfilePlaces are where `release init` looks for a Dockerfile, in
// order: the root first, then the folders projects commonly keep one in.
var dockerfilePlaces = []string{
	"Dockerfile",
	"Containerfile",
	"docker/Dockerfile",
	"build/Dockerfile",
	"build/package/Dockerfile",
	"deploy/Dockerfile",
	".docker/Dockerfile",
}

// maxDockerfile bounds the Dockerfile read for its EXPOSE; a real one is a
// few kilobytes.
const maxDockerfile = 1 << 20

// isClone reports whether dir is a Git repository: a clone with its .git,
// a linked worktree, or a bare repository.
func isClone(dir string) bool {
	_, err := openClone(dir)
	return err == nil
}

func openClone(dir string) (*gogit.Repository, error) {
	return gogit.PlainOpenWithOptions(dir, &gogit.PlainOpenOptions{EnableDotGitCommonDir: true})
}

// scanClone reads a clone's origin URL, its branch and its Dockerfile.
// base is the directory of the pipeline file: a clone with no origin, or
// an origin that is a relative path, is named relative to it. note gets
// what the user should know.
func scanClone(dir, base string, note func(format string, args ...any)) (*foundRepo, error) {
	r, err := openClone(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	name := strings.TrimSuffix(filepath.Base(dir), ".git")
	found := &foundRepo{Name: name, clone: dir}

	origin, err := r.Remote("origin")
	switch {
	case err == nil && len(origin.Config().URLs) > 0:
		var hadCredentials bool
		found.URL, hadCredentials = withoutCredentials(origin.Config().URLs[0])
		if hadCredentials {
			note("%s: its origin URL carries credentials; they are left out of the file (name the token's variable in token_env)", name)
		}
		if u := found.URL; repos.IsLocalPath(u) {
			// A remote on disk: named from the pipeline file, as the
			// loader reads it.
			if !filepath.IsAbs(u) {
				u = filepath.Join(dir, u)
			}
			found.URL = relativeTo(base, u)
		}
	default:
		found.URL = relativeTo(base, dir)
		note("%s: no origin remote; its url is the clone's path %s", name, found.URL)
	}

	found.Branch, found.branchGuess = cloneBranch(r)
	if found.branchGuess {
		note("%s: HEAD names no branch and origin/HEAD is not known; branch: %s is a guess", name, found.Branch)
	}

	read := worktreeReader(dir)
	if _, err := r.Worktree(); errors.Is(err, gogit.ErrIsBareRepository) {
		read = headReader(r)
	}
	for _, place := range dockerfilePlaces {
		data, err := read(place)
		if err != nil {
			continue
		}
		if found.Dockerfile != "" {
			note("%s: also has %s; the service uses %s", name, place, found.Dockerfile)
			continue
		}
		found.Dockerfile = place
		ports := exposedPorts(data)
		switch {
		case len(ports) == 0:
			note("found %s: %s, no EXPOSE (set port: by hand)", name, place)
		case len(ports) == 1:
			found.Port = ports[0]
			note("found %s: %s, port %d", name, place, found.Port)
		default:
			found.Port = ports[0]
			note("found %s: %s, port %d (it also exposes %s)", name, place, found.Port, joinInts(ports[1:]))
		}
	}
	if found.Dockerfile == "" {
		note("found %s: no Dockerfile; its service is a commented stub", name)
	}
	return found, nil
}

// cloneBranch is the clone's current branch; on a detached HEAD the
// branch origin/HEAD names; otherwise main, guessed.
func cloneBranch(r *gogit.Repository) (string, bool) {
	if head, err := r.Storer.Reference(plumbing.HEAD); err == nil && head.Type() == plumbing.SymbolicReference && head.Target().IsBranch() {
		return head.Target().Short(), false
	}
	if ref, err := r.Storer.Reference(plumbing.NewRemoteHEADReferenceName("origin")); err == nil && ref.Type() == plumbing.SymbolicReference {
		if b, ok := strings.CutPrefix(ref.Target().String(), "refs/remotes/origin/"); ok {
			return b, false
		}
	}
	return "main", true
}

// worktreeReader reads files of a clone's working tree: what the user sees.
func worktreeReader(dir string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a file", name)
		}
		return io.ReadAll(io.LimitReader(f, maxDockerfile))
	}
}

// headReader reads files of a bare repository's HEAD commit.
func headReader(r *gogit.Repository) func(string) ([]byte, error) {
	var tree *object.Tree
	if head, err := r.Head(); err == nil {
		if c, err := r.CommitObject(head.Hash()); err == nil {
			tree, _ = c.Tree()
		}
	}
	return func(name string) ([]byte, error) {
		if tree == nil {
			return nil, errors.New("no HEAD commit")
		}
		f, err := tree.File(name)
		if err != nil {
			return nil, err
		}
		if f.Size > maxDockerfile {
			return nil, fmt.Errorf("%s: larger than %d bytes", name, maxDockerfile)
		}
		s, err := f.Contents()
		return []byte(s), err
	}
}

// exposedPorts are the ports the final stage of a Dockerfile EXPOSEs, in
// order, with $VAR and ${VAR} read from the stage's ARG and ENV defaults.
// A port it cannot read (a variable without a default) is left out.
func exposedPorts(dockerfile []byte) []int {
	var ports []int
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(dockerfile))
	sc.Buffer(make([]byte, 64*1024), maxDockerfile)
	var line string
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") && line == "" {
			continue
		}
		if cont, ok := strings.CutSuffix(text, `\`); ok {
			line += cont + " "
			continue
		}
		line += text
		instr, args, _ := strings.Cut(strings.TrimSpace(line), " ")
		line = ""
		switch strings.ToUpper(instr) {
		case "FROM": // a new stage: only the last one's EXPOSE counts
			ports = nil
			vars = map[string]string{}
		case "ARG", "ENV":
			for k, v := range assignments(args) {
				vars[k] = v
			}
		case "EXPOSE":
			for _, f := range strings.Fields(args) {
				f = expandVars(f, vars)
				num, _, _ := strings.Cut(f, "/")  // 8080/tcp
				num, _, _ = strings.Cut(num, "-") // a range: its first port
				if p, err := strconv.Atoi(num); err == nil && p > 0 && p < 65536 {
					ports = append(ports, p)
				}
			}
		}
	}
	return ports
}

// assignments reads ARG and ENV arguments: NAME=value pairs, or ENV's
// older "NAME value" form.
func assignments(args string) map[string]string {
	out := map[string]string{}
	fields := strings.Fields(args)
	if len(fields) >= 2 && !strings.Contains(fields[0], "=") {
		out[fields[0]] = strings.Join(fields[1:], " ")
		return out
	}
	for _, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out
}

var dockerVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func expandVars(s string, vars map[string]string) string {
	return dockerVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := dockerVar.FindStringSubmatch(m)
		name := sub[1] + sub[3]
		if v, ok := vars[name]; ok {
			return v
		}
		return strings.TrimPrefix(sub[2], ":-")
	})
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// withoutCredentials drops the user and password of an http(s) URL, as a
// CI clone's origin (https://x-access-token:TOKEN@github.com/…) has them:
// a pipeline file never holds a secret. It reports whether there were any.
func withoutCredentials(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User == nil {
		return raw, false
	}
	u.User = nil
	return u.String(), true
}

// urlRepoName is the repo name a URL suggests: its last path element
// without .git.
func urlRepoName(u string) string {
	u = strings.TrimRight(u, "/")
	if i := strings.LastIndexAny(u, "/:"); i >= 0 {
		u = u[i+1:]
	}
	return strings.TrimSuffix(u, ".git")
}

// githubURL is a github.com remote; its first group is the owner.
var githubURL = regexp.MustCompile(`^(?:https?://(?:[^@/]+@)?github\.com/|ssh://git@github\.com/|git@github\.com:)([A-Za-z0-9-]+)/[^/]+?(?:\.git)?/?$`)

// githubOwner is the owner of a github.com URL, or "".
func githubOwner(u string) string {
	if m := githubURL.FindStringSubmatch(u); m != nil {
		return m[1]
	}
	return ""
}

// relativeTo names path relative to base when it is below or beside it
// (./api, ../clones/api), absolute otherwise.
func relativeTo(base, path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(base, abs)
	if err != nil || strings.HasPrefix(rel, ".."+string(filepath.Separator)+"..") {
		return abs
	}
	if !strings.HasPrefix(rel, "..") {
		rel = "." + string(filepath.Separator) + rel
	}
	return filepath.ToSlash(rel)
}
