package dockerbuild

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxLinkDepth bounds symlink chains, as the kernel's ELOOP does.
const maxLinkDepth = 40

// buildContext is a build context taken from a commit's tree: the files
// under the context directory that .dockerignore leaves in. It is checked
// completely before a byte goes to the engine, so a bad context builds
// nothing.
type buildContext struct {
	files   []contextFile
	modTime time.Time
	skipped []string // submodules, which have no content in the tree
	// dockerfile is the Dockerfile's name in the context; when dfContent
	// is set, the tar carries it instead of the Dockerfile's blob.
	dockerfile string
	dfContent  []byte
	// dfHidden: .dockerignore excludes the Dockerfile, so the engine drops
	// it from the context once read and no build step sees its content.
	dfHidden bool
}

type contextFile struct {
	name string // relative to the context root, slash-separated
	mode filemode.FileMode
	blob *object.Blob
	link string // symlink target
}

// checkPath rejects a context or Dockerfile path that is absolute or climbs
// out with "..": both would leave the repo.
func checkPath(what, p string) error {
	if p == "" {
		return nil
	}
	if path.IsAbs(p) || strings.HasPrefix(p, `\`) || (len(p) > 1 && p[1] == ':') {
		return fmt.Errorf("%s %q is absolute; it must be a path inside the repo", what, p)
	}
	for _, el := range strings.Split(strings.ReplaceAll(p, `\`, "/"), "/") {
		if el == ".." {
			return fmt.Errorf("%s %q leaves the repo with \"..\"", what, p)
		}
	}
	return nil
}

// newBuildContext collects the context dir of commit's tree, with the
// Dockerfile at dockerfile (relative to the context dir).
func newBuildContext(commit *object.Commit, dir, dockerfile string) (*buildContext, error) {
	root, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of commit %s: %w", commit.Hash, err)
	}
	dir = path.Clean(dir)
	tree := root
	if dir != "." {
		// Walk element by element so that a symlinked directory on the way
		// is named instead of reported as missing.
		for i, el := range strings.Split(dir, "/") {
			sofar := strings.Join(strings.Split(dir, "/")[:i+1], "/")
			e, err := tree.FindEntry(el)
			if err != nil {
				return nil, fmt.Errorf("context %q: %s not found at commit %s", dir, sofar, short(commit.Hash.String()))
			}
			switch e.Mode {
			case filemode.Dir:
			case filemode.Symlink:
				return nil, fmt.Errorf("context %q: %s is a symlink; the context must be a real directory of the repo", dir, sofar)
			default:
				return nil, fmt.Errorf("context %q: %s is not a directory", dir, sofar)
			}
			if tree, err = tree.Tree(el); err != nil {
				return nil, fmt.Errorf("context %q: read %s: %w", dir, sofar, err)
			}
		}
	}

	bc := &buildContext{modTime: commit.Committer.When.UTC()}
	var all []contextFile
	links := map[string]string{}
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, e, err := walker.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("walk context %q: %w", dir, err)
		}
		switch e.Mode {
		case filemode.Dir:
			continue
		case filemode.Submodule:
			bc.skipped = append(bc.skipped, name)
			continue
		}
		file, err := tree.TreeEntryFile(&e)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		b := &file.Blob
		f := contextFile{name: name, mode: e.Mode, blob: b}
		if e.Mode == filemode.Symlink {
			target, err := readAll(b)
			if err != nil {
				return nil, fmt.Errorf("read symlink %s: %w", name, err)
			}
			f.link = target
			links[name] = target
		}
		all = append(all, f)
	}

	// A symlink is kept as a link, never followed here; but one that leads
	// out of the context (directly or through other links) is an error, so
	// the build cannot reach files outside the repo.
	for _, f := range all {
		if f.mode != filemode.Symlink {
			continue
		}
		if err := checkLink(links, f.name); err != nil {
			return nil, err
		}
	}

	var ig *ignore
	for _, f := range all {
		if f.name == ".dockerignore" && f.mode != filemode.Symlink {
			r, err := f.blob.Reader()
			if err != nil {
				return nil, fmt.Errorf("read .dockerignore: %w", err)
			}
			ig, err = parseIgnore(r)
			r.Close()
			if err != nil {
				return nil, fmt.Errorf("parse .dockerignore: %w", err)
			}
		}
	}
	dockerfile = path.Clean(dockerfile)
	bc.dockerfile = dockerfile
	bc.dfHidden = ig.excluded(dockerfile)
	found := false
	for _, f := range all {
		// The Dockerfile and .dockerignore always go, as with the docker CLI.
		keep := f.name == dockerfile || f.name == ".dockerignore"
		if !keep && ig.excluded(f.name) {
			continue
		}
		if f.name == dockerfile {
			found = true
		}
		bc.files = append(bc.files, f)
	}
	if !found {
		return nil, fmt.Errorf("dockerfile %q not found in context %q at commit %s", dockerfile, dir, short(commit.Hash.String()))
	}
	return bc, nil
}

func readAll(b *object.Blob) (string, error) {
	r, err := b.Reader()
	if err != nil {
		return "", err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, 4096))
	return string(data), err
}

// checkLink resolves the symlink at name inside the context, following
// links it passes through, and fails when the path leaves the context root
// or is absolute.
func checkLink(links map[string]string, name string) error {
	outside := func(why string) error {
		return fmt.Errorf("symlink %s -> %s points outside the build context (%s)", name, links[name], why)
	}
	var resolve func(dir []string, target string, depth int) ([]string, error)
	resolve = func(dir []string, target string, depth int) ([]string, error) {
		if depth > maxLinkDepth {
			return nil, outside("too many levels of symlinks")
		}
		if path.IsAbs(target) {
			return nil, outside("absolute target " + target)
		}
		cur := append([]string(nil), dir...)
		for _, el := range strings.Split(target, "/") {
			switch el {
			case "", ".":
				continue
			case "..":
				if len(cur) == 0 {
					return nil, outside("climbs above the context root")
				}
				cur = cur[:len(cur)-1]
				continue
			}
			cur = append(cur, el)
			if t, ok := links[strings.Join(cur, "/")]; ok {
				var err error
				if cur, err = resolve(cur[:len(cur)-1], t, depth+1); err != nil {
					return nil, err
				}
			}
		}
		return cur, nil
	}
	dir := strings.Split(path.Dir(name), "/")
	if path.Dir(name) == "." {
		dir = nil
	}
	_, err := resolve(dir, links[name], 0)
	return err
}

// appendInstruction makes line the Dockerfile's last instruction in the
// tar. It changes nothing and returns false unless .dockerignore hides the
// Dockerfile from the build (a COPY of the context must see the committed
// file), and when the Dockerfile is a symlink or its last line continues on
// the next one.
func (bc *buildContext) appendInstruction(line string) (bool, error) {
	if !bc.dfHidden {
		return false, nil
	}
	for _, f := range bc.files {
		if f.name != bc.dockerfile {
			continue
		}
		if f.mode == filemode.Symlink {
			return false, nil
		}
		text, err := readAll(f.blob)
		if err != nil {
			return false, fmt.Errorf("read %s: %w", f.name, err)
		}
		last := strings.TrimRight(text, " \t\r\n")
		if strings.HasSuffix(last, "\\") || strings.HasSuffix(last, "`") {
			return false, nil
		}
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		bc.dfContent = []byte(text + line + "\n")
		return true, nil
	}
	return false, nil
}

// writeTar writes the context as a tar stream, directories first, with the
// commit's time on every entry so that the same commit gives the same tar.
func (bc *buildContext) writeTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	var mkdirs func(d string) error
	mkdirs = func(d string) error {
		if d == "." || dirs[d] {
			return nil
		}
		if err := mkdirs(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: bc.modTime, Format: tar.FormatPAX})
	}
	for _, f := range bc.files {
		if err := mkdirs(path.Dir(f.name)); err != nil {
			return err
		}
		h := &tar.Header{Name: f.name, ModTime: bc.modTime, Format: tar.FormatPAX}
		switch f.mode {
		case filemode.Symlink:
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		case filemode.Executable:
			h.Mode = 0o755
		default:
			h.Mode = 0o644
		}
		h.Typeflag, h.Size = tar.TypeReg, f.blob.Size
		if f.name == bc.dockerfile && bc.dfContent != nil {
			h.Size = int64(len(bc.dfContent))
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if _, err := tw.Write(bc.dfContent); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		r, err := f.blob.Reader()
		if err != nil {
			return fmt.Errorf("read %s: %w", f.name, err)
		}
		_, err = io.Copy(tw, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", f.name, err)
		}
	}
	return tw.Close()
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
