package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/repos"
)

// InitOptions are the inputs of `release init`.
type InitOptions struct {
	f    *Factory
	Args []string // directories and URLs; none is the current directory
	Name string   // --name: the pipeline's name
}

// NewCmdInit builds `release init`. runF replaces the work in tests.
func NewCmdInit(f *Factory, runF func(*InitOptions) error) *cobra.Command {
	opts := &InitOptions{f: f}
	cmd := &cobra.Command{
		Use:   "init [DIR|URL...]",
		Short: "Write a commented pipeline.yaml for a set of repos",
		Long: `Write a commented pipeline file (pipeline.yaml, or -f FILE) for a set of repos,
never over an existing one.

Each argument is a directory or a Git URL; none is the current directory.
A directory is one clone, or a directory of clones: each subdirectory that is a
Git repository is a repo. A clone's url is its origin remote (its own path
when it has none) and its branch the one checked out (origin/HEAD on a detached
HEAD). A Dockerfile (or Containerfile) at the root, or a Dockerfile in docker/,
build/, build/package/, deploy/ or .docker/, makes a service with the port its
final stage EXPOSEs. A URL is not cloned: its repo is written with the URL,
and its service as a commented stub. Credentials in an https origin are left
out.

The file has the environments dev → staging → prod (prod behind an approval),
the registry 127.0.0.1:5000 and the stages build, push, deploy-dev,
promote-staging, tag, release-prod and notes (commented out when no repo is on
GitHub), each block explained. release validate accepts it as written. What was found goes to stderr, the file's name
to stdout.

Exits 1 when the file exists, 2 when an argument is neither a directory with a
repo in it nor a Git URL.`,
		Example: `  # a directory of clones: one repo per subdirectory
  cd ~/src/sweepboard && release init

  # some clones and a repo not cloned here
  release init ../api ../web https://github.com/sweepboard/auth.git

  # another file name, another pipeline name
  release init -f deploy/pipeline.yaml --name shop ~/src/shop`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Args = args
			if runF != nil {
				return runF(opts)
			}
			return initRun(opts)
		},
	}
	cmd.Flags().StringVar(&opts.Name, "name", "", "the pipeline's name (default: the name of the file's directory)")
	return cmd
}

func initRun(opts *InitOptions) error {
	f := opts.f
	name := f.FileName()
	exists := func() error {
		return fmt.Errorf("%s already exists; release init never overwrites a pipeline file (move it away, or name another with -f FILE)", name)
	}
	if _, err := os.Lstat(name); err == nil {
		return exists()
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return err
	}
	base := filepath.Dir(abs)
	note := func(format string, args ...any) { fmt.Fprintf(f.IO.ErrOut, format+"\n", args...) }

	found, err := findRepos(opts.Args, base, note)
	if err != nil {
		return err
	}
	pipelineName := sanitizeName(opts.Name)
	if opts.Name == "" {
		pipelineName = sanitizeName(filepath.Base(base))
	} else if pipelineName != opts.Name {
		return usageErrorf("--name %q: want lowercase letters, digits and dashes, like %q", opts.Name, pipelineName)
	}
	owner := ""
	for _, r := range found {
		if o := githubOwner(r.URL); o != "" && owner == "" {
			owner = o
		} else if o != "" && o != owner {
			note("%s: on GitHub under %s, not %s; github.owner is %s", r.Name, o, owner, owner)
		}
	}
	if owner == "" {
		note("no GitHub remote: the notes stage is commented out (set github.owner to publish release notes)")
	}
	data := renderPipeline(pipelineName, owner, found)

	// The file must load as written: a file release validate refuses is
	// a bug here, and writing it would only pass the bug on.
	if _, err := pipeline.Parse(name, abs, data, f.Registry()); err != nil {
		return fmt.Errorf("release init wrote a pipeline file that does not validate (a bug; nothing was written):\n%w", err)
	}
	out, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return exists()
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := out.Write(data); err != nil {
		out.Close()
		os.Remove(name)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, map[string]any{"file": name, "name": pipelineName, "repos": found})
	}
	fmt.Fprintln(f.IO.Out, name)
	return nil
}

// findRepos reads every argument: a clone, a directory of clones, or a
// URL. Names are made unique; the order is by name.
func findRepos(args []string, base string, note func(string, ...any)) ([]*foundRepo, error) {
	if len(args) == 0 {
		args = []string{"."}
	}
	var found []*foundRepo
	seen := map[string]bool{}
	add := func(r *foundRepo) {
		key := r.URL
		if r.clone != "" {
			key, _ = filepath.Abs(r.clone)
		}
		if seen[key] {
			return
		}
		seen[key] = true
		found = append(found, r)
	}
	for _, arg := range args {
		info, statErr := os.Stat(arg)
		switch {
		case statErr == nil && info.IsDir():
			dirs, err := clonesIn(arg)
			if err != nil {
				return nil, err
			}
			for _, dir := range dirs {
				r, err := scanClone(dir, base, note)
				if err != nil {
					return nil, err
				}
				add(r)
			}
		case statErr == nil:
			return nil, usageErrorf("%s: not a directory or a Git URL", arg)
		case !repos.IsLocalPath(arg):
			r := &foundRepo{Name: urlRepoName(arg), URL: arg, Branch: "main", branchGuess: true}
			if r.Name == "" {
				return nil, usageErrorf("%s: a Git URL names a repository, like https://github.com/OWNER/REPO.git", arg)
			}
			note("%s: %s is not cloned here; branch main is a guess and its service a commented stub", r.Name, arg)
			add(r)
		default:
			return nil, usageErrorf("%s: no such directory, and not a Git URL", arg)
		}
	}
	slices.SortStableFunc(found, func(a, b *foundRepo) int { return strings.Compare(a.Name, b.Name) })
	taken := map[string]bool{}
	for _, r := range found {
		name := r.Name
		for i := 2; taken[name]; i++ {
			name = fmt.Sprintf("%s-%d", r.Name, i)
		}
		if name != r.Name {
			note("%s: a second repo of that name is called %s", r.Name, name)
			r.Name = name
		}
		taken[name] = true
	}
	return found, nil
}

// clonesIn is dir itself when it is a clone, or else its subdirectories
// that are, sorted; hidden ones are skipped.
func clonesIn(dir string) ([]string, error) {
	if isClone(dir) {
		return []string{dir}, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var dirs []string
	for _, e := range entries {
		sub := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if info, err := os.Stat(sub); err != nil || !info.IsDir() {
			continue
		}
		if isClone(sub) {
			dirs = append(dirs, sub)
		}
	}
	if len(dirs) == 0 {
		return nil, usageErrorf("%s: not a Git repository, and none of its subdirectories is one", dir)
	}
	return dirs, nil
}

// sanitizeName makes s a name that can start an image name: lowercase
// letters and digits, separated by single dashes.
func sanitizeName(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
			continue
		}
		dash = true
	}
	if b.Len() == 0 {
		return "app"
	}
	return b.String()
}
