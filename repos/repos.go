// Package repos handles the Git repositories of a release train: local bare
// mirrors of every repo of the pipeline file, their branch heads, the one
// release version they share, annotated tags pushed to all of them or none,
// per-repo changelogs and the GitHub releases that carry them.
//
// A Set is built from the pipeline's Spec. Its methods are safe for
// concurrent use; each repo's mirror is fetched at most once per Set.
package repos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
)

// DefaultParallel is how many repos are fetched or pushed at once unless
// WithParallel says otherwise.
const DefaultParallel = 8

// Set is the repos of one pipeline file, with their mirrors under a work
// directory.
type Set struct {
	spec     *stages.Spec
	workDir  string
	logger   *slog.Logger
	getenv   func(string) string
	parallel int

	ghRetry retry.Policy // GitHub calls; the zero Policy is retry.Default

	gitAttempts int           // tries of one list or push that failed on the way
	gitBackoff  time.Duration // the first wait between them, doubled after each

	mu      sync.Mutex
	mirrors map[string]*mirror
	// fence is checked right before every effect on a remote (a tag push,
	// a GitHub release): nil checks nothing.
	fence func(context.Context) error
}

// mirror is the local bare copy of one repo. mu serialises the first fetch,
// so concurrent Open calls for the same repo wait for one fetch instead of
// racing two into the same directory.
type mirror struct {
	mu      sync.Mutex
	repo    *git.Repository
	fetched bool
}

// Option configures a Set.
type Option func(*Set)

// WithLogger sends progress to l. The default discards it.
func WithLogger(l *slog.Logger) Option {
	return func(s *Set) {
		if l != nil {
			s.logger = l
		}
	}
}

// WithGetenv replaces os.Getenv for reading the token variables named in the
// pipeline file; tests use it to avoid touching the process environment.
func WithGetenv(getenv func(string) string) Option {
	return func(s *Set) { s.getenv = getenv }
}

// WithFence has every effect on a remote (a tag push, a GitHub release)
// checked with fence right before it: a run that no longer owns its lease
// stops there.
func WithFence(fence func(context.Context) error) Option {
	return func(s *Set) { s.fence = fence }
}

// checkFence is the fence check before an effect.
func (s *Set) checkFence(ctx context.Context) error {
	if s.fence == nil {
		return nil
	}
	return s.fence(ctx)
}

// WithParallel bounds how many repos are fetched or pushed at once.
func WithParallel(n int) Option {
	return func(s *Set) {
		if n > 0 {
			s.parallel = n
		}
	}
}

// New returns the Set of the repos in spec.Repos. Mirrors live under
// filepath.Join(workDir, "repos", NAME+".git"); nothing is fetched until a
// method needs it.
func New(spec *stages.Spec, workDir string, opts ...Option) *Set {
	s := &Set{
		spec:     spec,
		workDir:  workDir,
		logger:   slog.New(slog.DiscardHandler),
		getenv:   os.Getenv,
		parallel: DefaultParallel,
		mirrors:  make(map[string]*mirror),

		gitAttempts: 3,
		gitBackoff:  time.Second,
	}
	for _, o := range opts {
		o(s)
	}
	installGitHTTP()
	return s
}

// Names returns the repo names, sorted.
func (s *Set) Names() []string { return s.spec.RepoNames() }

// TagPrefix is the prefix of release tags, "v" unless the file says
// otherwise.
func (s *Set) TagPrefix() string {
	if s.spec.Version.TagPrefix == "" {
		return "v"
	}
	return s.spec.Version.TagPrefix
}

// MirrorDir is where the bare mirror of the named repo lives.
func (s *Set) MirrorDir(name string) string {
	return filepath.Join(s.workDir, "repos", name+".git")
}

// Open returns the bare mirror of the named repo, cloning it on first use
// and fetching its branches and tags once per Set. Concurrent callers for the
// same repo share one fetch. A failed fetch is not remembered: the next call
// tries again.
func (s *Set) Open(ctx context.Context, name string) (*git.Repository, error) {
	return s.fetch(ctx, name, false)
}

// fetch fetches the mirror once per Set, or again when force is set.
func (s *Set) fetch(ctx context.Context, name string, force bool) (*git.Repository, error) {
	m, err := s.mirror(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fetched && !force {
		return m.repo, nil
	}
	r, err := s.fetchMirror(ctx, name)
	if err != nil {
		return nil, err
	}
	m.repo, m.fetched = r, true
	return r, nil
}

// openWith returns the mirror of the named repo without fetching when it
// already holds the commit; a stage that runs after the commits were pinned
// finds them there and saves a round trip to the remote.
func (s *Set) openWith(ctx context.Context, name string, commit plumbing.Hash) (*git.Repository, error) {
	m, err := s.mirror(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.repo == nil {
		if r, err := git.PlainOpen(s.MirrorDir(name)); err == nil {
			m.repo = r
		}
	}
	r := m.repo
	m.mu.Unlock()
	if r != nil && hasCommit(r, commit) {
		return r, nil
	}
	r, err = s.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	if !hasCommit(r, commit) {
		return nil, fmt.Errorf("find commit %s in repo %s: not on the remote", commit, name)
	}
	return r, nil
}

func hasCommit(r *git.Repository, h plumbing.Hash) bool {
	_, err := r.CommitObject(h)
	return err == nil
}

// Heads returns the commit SHA at the head of every repo's branch, fetched
// from the remotes, by repo name. The engine pins these when a run starts.
func (s *Set) Heads(ctx context.Context) (map[string]string, error) {
	return s.HeadsEach(ctx, nil)
}

// HeadsEach is Heads that calls fetched, when it is not nil, as each repo's
// head is known: the repo, its head and how long its fetch took. Repos are
// fetched side by side, so fetched may be called from several goroutines,
// one call at a time.
func (s *Set) HeadsEach(ctx context.Context, fetched func(repo, head string, took time.Duration)) (map[string]string, error) {
	heads := make(map[string]string)
	var mu sync.Mutex
	err := s.each(ctx, s.Names(), func(ctx context.Context, name string) error {
		start := time.Now()
		r, err := s.Open(ctx, name)
		if err != nil {
			return err
		}
		branch := s.branch(name)
		ref, err := r.Reference(plumbing.NewBranchReferenceName(branch), true)
		if err != nil {
			return fmt.Errorf("resolve branch %s of repo %s: %w", branch, name, err)
		}
		mu.Lock()
		defer mu.Unlock()
		heads[name] = ref.Hash().String()
		if fetched != nil {
			fetched(name, heads[name], time.Since(start))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return heads, nil
}

func (s *Set) mirror(name string) (*mirror, error) {
	if _, ok := s.spec.Repos[name]; !ok {
		return nil, fmt.Errorf("unknown repo %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mirrors[name]
	if m == nil {
		m = &mirror{}
		s.mirrors[name] = m
	}
	return m, nil
}

func (s *Set) branch(name string) string {
	if b := s.spec.Repos[name].Branch; b != "" {
		return b
	}
	return "main"
}

// mirrorRefSpecs keep the mirror an exact copy of the remote's branches and
// tags. Forcing is right here: the mirror follows the remote, it is never the
// source of truth.
var mirrorRefSpecs = []config.RefSpec{
	"+refs/heads/*:refs/heads/*",
	"+refs/tags/*:refs/tags/*",
}

// dirLocks serialise writes to one mirror directory across all Sets of the
// process: stages running side by side (docker-build fetching, git-tag
// tagging) build their own Sets over the same work directory, and a fetch
// that prunes tags must not run between a tag's creation and its push.
var dirLocks sync.Map // absolute mirror dir → *sync.Mutex

func lockDir(dir string) func() {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	mu, _ := dirLocks.LoadOrStore(dir, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

func (s *Set) fetchMirror(ctx context.Context, name string) (*git.Repository, error) {
	rem, err := s.remote(name)
	if err != nil {
		return nil, err
	}
	dir := s.MirrorDir(name)
	defer lockDir(dir)()
	r, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("create mirror directory of repo %s: %w", name, err)
		}
		r, err = git.PlainInit(dir, true)
	}
	if err != nil {
		return nil, fmt.Errorf("open mirror of repo %s at %s: %w", name, dir, err)
	}
	s.logger.Debug("fetch", "repo", name, "url", rem.display)
	err = git.NewRemote(r.Storer, rem.config()).FetchContext(withDeadlines(ctx, s.spec.Timeouts), &git.FetchOptions{
		RefSpecs: mirrorRefSpecs,
		Auth:     rem.auth,
		Tags:     git.NoTags,
		Prune:    true,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate), errors.Is(err, transport.ErrEmptyRemoteRepository):
	default:
		return nil, rem.errorf("fetch", err)
	}
	return r, nil
}

// remote is a resolved repo URL with its credentials. display is the URL
// without any user information, safe to print.
type remote struct {
	name    string
	url     string
	display string
	auth    transport.AuthMethod
	token   string // the HTTP token in auth, to keep out of error text
}

func (r *remote) config() *config.RemoteConfig {
	return &config.RemoteConfig{Name: "origin", URLs: []string{r.url}}
}

// errorf names the action and the remote. The URL shown is stripped of
// user information; go-git puts the body of a 401, 403 or 404 in its error,
// and a server or proxy that echoes the request's Authorization header there
// would show the token, so it is redacted.
func (r *remote) errorf(action string, err error) error {
	return fmt.Errorf("%s repo %s (%s): %w", action, r.name, r.display, redactError(err, r.token))
}

// remote resolves the named repo's URL: a local path (relative to the
// pipeline file), file://, https (token from Repo.TokenEnv as the basic-auth
// password of user x-access-token, as GitHub expects) or ssh (Repo.SSHKey,
// else the agent).
func (s *Set) remote(name string) (*remote, error) {
	repo, ok := s.spec.Repos[name]
	if !ok {
		return nil, fmt.Errorf("unknown repo %q", name)
	}
	raw := repo.URL
	if raw == "" {
		return nil, fmt.Errorf("repo %s: no url", name)
	}
	if IsLocalPath(raw) {
		p := raw
		if !filepath.IsAbs(p) {
			p = filepath.Join(s.spec.Dir, p)
		}
		p, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("resolve path of repo %s: %w", name, err)
		}
		return &remote{name: name, url: p, display: p}, nil
	}
	ep, err := transport.NewEndpoint(raw)
	if err != nil {
		return nil, fmt.Errorf("parse url of repo %s: %w", name, redactURLError(err, raw))
	}
	rem := &remote{name: name, url: raw, display: displayURL(ep)}
	switch ep.Protocol {
	case "file":
	case "http", "https":
		if repo.TokenEnv != "" {
			token := s.getenv(repo.TokenEnv)
			if token == "" {
				return nil, fmt.Errorf("repo %s: token variable %s is empty", name, repo.TokenEnv)
			}
			rem.auth = &githttp.BasicAuth{Username: "x-access-token", Password: token}
			rem.token = token
		}
	case "ssh":
		user := ep.User
		if user == "" {
			user = "git"
		}
		if repo.SSHKey != "" {
			key := repo.SSHKey
			if !filepath.IsAbs(key) {
				key = filepath.Join(s.spec.Dir, key)
			}
			auth, err := gitssh.NewPublicKeysFromFile(user, key, "")
			if err != nil {
				return nil, fmt.Errorf("read ssh key of repo %s: %w", name, err)
			}
			rem.auth = sshDeadline{AuthMethod: auth, connect: s.spec.Timeouts.Or(deadline.Deadlines{}).Connect}
		} else {
			auth, err := gitssh.NewSSHAgentAuth(user)
			if err != nil {
				return nil, fmt.Errorf("connect to the ssh agent for repo %s: %w", name, err)
			}
			rem.auth = sshDeadline{AuthMethod: auth, connect: s.spec.Timeouts.Or(deadline.Deadlines{}).Connect}
		}
	default:
		return nil, fmt.Errorf("repo %s: unsupported url scheme %q", name, ep.Protocol)
	}
	return rem, nil
}

// IsLocalPath reports whether raw is a plain path rather than a URL or an
// scp-like address (git@host:path).
func IsLocalPath(raw string) bool {
	if strings.Contains(raw, "://") {
		return false
	}
	if filepath.IsAbs(raw) || strings.HasPrefix(raw, ".") {
		return true
	}
	colon := strings.Index(raw, ":")
	slash := strings.Index(raw, "/")
	return colon < 0 || (slash >= 0 && slash < colon)
}

func displayURL(ep *transport.Endpoint) string {
	if ep.Protocol == "file" {
		return ep.Path
	}
	u := url.URL{Scheme: ep.Protocol, Host: ep.Host, Path: ep.Path}
	if ep.Port != 0 {
		u.Host = fmt.Sprintf("%s:%d", ep.Host, ep.Port)
	}
	if ep.User != "" && ep.Protocol == "ssh" {
		u.User = url.User(ep.User)
	}
	return u.String()
}

// redactURLError keeps a URL that carries a password out of an error text.
func redactURLError(err error, raw string) error {
	u, perr := url.Parse(raw)
	if perr != nil || u.User == nil {
		return errors.New(strings.ReplaceAll(err.Error(), raw, "<url>"))
	}
	if p, ok := u.User.Password(); ok && p != "" {
		return errors.New(strings.ReplaceAll(err.Error(), p, "***"))
	}
	return err
}

// each runs fn for every name with at most s.parallel at once and returns
// the errors joined, in the order of names.
func (s *Set) each(ctx context.Context, names []string, fn func(ctx context.Context, name string) error) error {
	errs := make([]error, len(names))
	sem := make(chan struct{}, s.parallel)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			errs[i] = fn(ctx, name)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Reach checks that the named repo's remote answers with the configured
// credentials and has its branch; `release doctor` reports the result.
func (s *Set) Reach(ctx context.Context, name string) error {
	rem, err := s.remote(name)
	if err != nil {
		return err
	}
	refs, err := git.NewRemote(memory.NewStorage(), rem.config()).ListContext(withDeadlines(ctx, s.spec.Timeouts), &git.ListOptions{Auth: rem.auth})
	if err != nil {
		return rem.errorf("list refs of", err)
	}
	want := plumbing.NewBranchReferenceName(s.branch(name))
	for _, ref := range refs {
		if ref.Name() == want {
			return nil
		}
	}
	return fmt.Errorf("repo %s (%s): no branch %s", name, rem.display, s.branch(name))
}
