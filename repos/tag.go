package repos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// Outcome is what Tag did in one repo.
type Outcome string

// Outcomes of Tag, per repo.
const (
	Pushed  Outcome = "pushed"  // the tag was created and pushed
	Adopted Outcome = "adopted" // the remote already had the tag at the pinned commit; nothing pushed
	Failed  Outcome = "failed"  // the check or the push failed; Err says why
	Skipped Outcome = "skipped" // not pushed because the check failed in another repo
)

// TagOptions tune Tag.
type TagOptions struct {
	// Tagger signs the annotated tags; the default is
	// "release <release@localhost>" at the current time.
	Tagger *object.Signature
	// Summary is added to every tag message under the "Release vX.Y.Z"
	// line; the default names the repo's commits since its previous
	// release tag by type.
	Summary string
}

// TagResult is the outcome of Tag in one repo.
type TagResult struct {
	Repo    string  `json:"repo"`
	Tag     string  `json:"tag"`
	Commit  string  `json:"commit"`
	Outcome Outcome `json:"outcome"`
	Err     error   `json:"-"`
	Error   string  `json:"error,omitempty"`
}

// ConflictError is a tag that already exists at another commit.
type ConflictError struct {
	Repo, Tag string
	Have      string // the commit the remote's tag points at
	Want      string // the pinned commit
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("repo %s: tag %s exists at %s, not at the pinned commit %s", e.Repo, e.Tag, e.Have, e.Want)
}

// RejectedError is a push that the remote received and refused: a hook
// said no, or the ref could not be created there. Another attempt meets the
// same refusal until someone changes the remote.
type RejectedError struct {
	Repo, Remote, Tag string
	Reason            string // the remote's words, hook output included
	Err               error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("push tag %s to repo %s (%s): rejected by the remote: %s", e.Tag, e.Repo, e.Remote, e.Reason)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// PushDeniedError is a remote that Tag may read but not push to, found
// before any push: an HTTP(S) remote that refuses receive-pack to the
// configured credentials, or a local repo whose directories this process
// cannot write.
type PushDeniedError struct {
	Repo, Remote string
	Reason       string // what refused, in our words: never the server's text
	Err          error
}

func (e *PushDeniedError) Error() string {
	return fmt.Sprintf("repo %s (%s): pushing is not allowed: %s", e.Repo, e.Remote, e.Reason)
}

func (e *PushDeniedError) Unwrap() error { return e.Err }

// Tag stamps version on every repo, all or none: an annotated tag at each
// repo's pinned commit (commits, by repo name; every repo must have one).
//
//  1. Check every repo against its remote, in parallel: the tag is absent
//     (to push), or present at the pinned commit (adopted, no push), or
//     present at another commit (a *ConflictError). A repo to push must
//     also have the pinned commit on its branch at the remote, and accept a
//     push from us, else a *PushDeniedError: an HTTP(S) remote must serve
//     receive-pack's discovery (GET info/refs?service=git-receive-pack) to
//     the credentials the push will use, which a server answers 401 or 403
//     when they may fetch but not push; a local repo's refs/tags and
//     objects directories must be writable by this process (not on a
//     read-only mount, not immutable, not lacking write permission; root
//     passes mode bits, as it does when pushing). ssh remotes are not
//     probed for push access. Any failure here stops Tag before a single
//     push; the other repos are Skipped.
//  2. Push the missing tags in parallel, at most WithParallel at once. A
//     push never forces and nothing is ever deleted on a remote. A failure
//     on the way (connection refused or reset, HTTP 5xx) is tried again, a
//     bounded number of times; a refusal by the remote (a hook) is not: it
//     is a *RejectedError. After a failed push the remote is asked again: a
//     tag that appeared there since the check is a *ConflictError, or
//     adopted when it is at the pinned commit.
//     The check cannot see what a remote decides only when a push arrives:
//     a pre-receive hook, a protected-tag rule, a full disk, a credential
//     revoked since. Such a failure fails that repo; the tags already pushed
//     to other repos stay there and are reported Pushed (a published tag is
//     never deleted), and a resume, Tag again with the same arguments,
//     adopts them and pushes only what is missing.
//
// Results come back in repo order, also when err is not nil, so a caller can
// record what was pushed; a second Tag with the same arguments pushes only
// what is still missing, and none at all after a success.
func (s *Set) Tag(ctx context.Context, version string, commits map[string]string, opts TagOptions) ([]TagResult, error) {
	prefix := s.TagPrefix()
	v, err := ParseVersion(version, prefix)
	if err != nil {
		return nil, err
	}
	tag := prefix + v.String()
	names := s.Names()
	for _, name := range names {
		if _, ok := commits[name]; !ok {
			return nil, fmt.Errorf("tag %s: no pinned commit for repo %s", tag, name)
		}
	}
	tagger := opts.Tagger
	if tagger == nil {
		tagger = &object.Signature{Name: "release", Email: "release@localhost", When: time.Now()}
	}

	results := make([]TagResult, len(names))
	repos := make([]*git.Repository, len(names))
	for i, name := range names {
		results[i] = TagResult{Repo: name, Tag: tag, Commit: commits[name]}
	}
	fail := func(i int, err error) error {
		results[i].Outcome, results[i].Err, results[i].Error = Failed, err, err.Error()
		return err
	}

	// 1. Check.
	err = s.each(ctx, names, func(ctx context.Context, name string) error {
		i := slices.Index(names, name)
		want := plumbing.NewHash(commits[name])
		if want.IsZero() || want.String() != strings.ToLower(commits[name]) {
			return fail(i, fmt.Errorf("repo %s: pinned commit %q is not a SHA", name, commits[name]))
		}
		r, err := s.openWith(ctx, name, want)
		if err != nil {
			return fail(i, err)
		}
		repos[i] = r
		state, err := s.remoteState(ctx, r, name, tag)
		if err != nil {
			return fail(i, err)
		}
		switch {
		case !state.tagFound:
			if err := s.onBranch(ctx, name, want, state.branch); err != nil {
				return fail(i, err)
			}
			if err := s.pushAllowed(ctx, name, tag); err != nil {
				return fail(i, err)
			}
		case state.tag == want:
			results[i].Outcome = Adopted
		default:
			return fail(i, &ConflictError{Repo: name, Tag: tag, Have: state.tag.String(), Want: want.String()})
		}
		return nil
	})
	if err != nil {
		for i := range results {
			if results[i].Outcome == "" {
				results[i].Outcome = Skipped
			}
		}
		return results, fmt.Errorf("check tag %s, nothing pushed: %w", tag, err)
	}

	// 2. Push.
	var todo []string
	for i, name := range names {
		if results[i].Outcome == "" {
			todo = append(todo, name)
		}
	}
	err = s.each(ctx, todo, func(ctx context.Context, name string) error {
		i := slices.Index(names, name)
		r, want := repos[i], plumbing.NewHash(commits[name])
		summary := opts.Summary
		if summary == "" {
			summary = s.tagSummary(r, name, v, want)
		}
		msg := "Release " + tag + "\n\n" + summary + "\n"
		defer lockDir(s.MirrorDir(name))()
		if err := createTag(r, tag, want, tagger, msg); err != nil {
			return fail(i, fmt.Errorf("create tag %s in the mirror of repo %s: %w", tag, name, err))
		}
		if err := s.checkFence(ctx); err != nil {
			return fail(i, fmt.Errorf("push tag %s to repo %s: %w", tag, name, err))
		}
		pushed, err := s.pushTag(ctx, r, name, tag)
		if err != nil && ctx.Err() == nil {
			// Someone may have pushed the tag since the check, or our push
			// landed and its answer was lost: look again.
			if state, lerr := s.remoteState(ctx, r, name, tag); lerr == nil && state.tagFound {
				if state.tag != want {
					return fail(i, &ConflictError{Repo: name, Tag: tag, Have: state.tag.String(), Want: want.String()})
				}
				err, pushed = nil, false
			}
		}
		if err != nil {
			return fail(i, err)
		}
		results[i].Outcome = Adopted
		if pushed {
			results[i].Outcome = Pushed
		}
		s.logger.Info("tag", "repo", name, "tag", tag, "commit", want.String(), "outcome", results[i].Outcome)
		return nil
	})
	if err != nil {
		return results, fmt.Errorf("push tag %s: %w", tag, err)
	}
	return results, nil
}

// remoteRefs is what the check of one repo needs from its remote.
type remoteRefs struct {
	tag      plumbing.Hash // the commit the tag points at, peeled
	tagFound bool
	branch   plumbing.Hash // the head of the repo's branch; zero if absent
}

// remoteState asks the remote (not the mirror, which may be stale) where
// the tag and the branch point, in one round trip.
func (s *Set) remoteState(ctx context.Context, r *git.Repository, name, tag string) (remoteRefs, error) {
	var st remoteRefs
	rem, err := s.remote(name)
	if err != nil {
		return st, err
	}
	var refs []*plumbing.Reference
	err = s.retry(ctx, rem, "list refs", func(ctx context.Context) error {
		refs, err = git.NewRemote(r.Storer, rem.config()).ListContext(ctx, &git.ListOptions{
			Auth:          rem.auth,
			PeelingOption: git.AppendPeeled,
		})
		return err
	})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return st, nil
	}
	if err != nil {
		return st, rem.errorf("list refs of", err)
	}
	full := plumbing.NewTagReferenceName(tag).String()
	branch := plumbing.NewBranchReferenceName(s.branch(name)).String()
	var direct, peeled plumbing.Hash
	for _, ref := range refs {
		switch ref.Name().String() {
		case full:
			direct = ref.Hash()
		case full + "^{}":
			peeled = ref.Hash()
		case branch:
			st.branch = ref.Hash()
		}
	}
	switch {
	case !peeled.IsZero():
		st.tag, st.tagFound = peeled, true
	case !direct.IsZero():
		// A lightweight tag, or an annotated one the server did not peel.
		st.tag, st.tagFound = direct, true
		if c, err := peel(r, direct); err == nil {
			st.tag = c
		}
	}
	return st, nil
}

// onBranch checks that the pinned commit is still on the repo's branch at
// the remote: a tag must not bring back a commit that was force-pushed away.
// The mirror is fetched only when the branch has moved past it.
func (s *Set) onBranch(ctx context.Context, name string, commit, head plumbing.Hash) error {
	if head == commit {
		return nil
	}
	branch := s.branch(name)
	if head.IsZero() {
		return fmt.Errorf("repo %s: no branch %s on the remote to check commit %s against", name, branch, commit)
	}
	m, err := s.mirror(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	r := m.repo
	m.mu.Unlock()
	if r == nil || !hasCommit(r, head) {
		if r, err = s.fetch(ctx, name, true); err != nil {
			return err
		}
	}
	hc, err := r.CommitObject(head)
	if err != nil {
		return fmt.Errorf("read head %s of branch %s in repo %s: %w", head, branch, name, err)
	}
	pc, err := r.CommitObject(commit)
	if err != nil {
		return fmt.Errorf("read commit %s in repo %s: %w", commit, name, err)
	}
	ok, err := pc.IsAncestor(hc)
	if err != nil {
		return fmt.Errorf("check commit %s against branch %s in repo %s: %w", commit, branch, name, err)
	}
	if !ok {
		return fmt.Errorf("repo %s: pinned commit %s is not on branch %s (rewritten since the run started?)", name, commit, branch)
	}
	return nil
}

// PushAllowed asks the repo's remote, without pushing anything, whether
// it would take a release tag from us: the probe Tag makes before its
// first push (see Tag), for `release doctor`. It returns a
// *PushDeniedError when the remote would refuse, and nil for an ssh
// remote, which it does not probe.
func (s *Set) PushAllowed(ctx context.Context, name string) error {
	return s.pushAllowed(ctx, name, s.TagPrefix()+"0.0.0")
}

// pushAllowed asks the remote, without pushing, whether it will take the
// tag from us; see Tag for what it probes. A repo that only adopts its tag
// is not asked: nothing is pushed there.
func (s *Set) pushAllowed(ctx context.Context, name, tag string) error {
	rem, err := s.remote(name)
	if err != nil {
		return err
	}
	ep, err := transport.NewEndpoint(rem.url)
	if err != nil {
		return fmt.Errorf("parse url of repo %s: %w", name, redactURLError(err, rem.url))
	}
	switch ep.Protocol {
	case "file":
		return writable(rem, ep.Path, tag)
	case "http", "https":
		return s.receivePackAllowed(ctx, rem, ep)
	}
	return nil
}

// receivePackAllowed fetches receive-pack's ref advertisement with the
// push's credentials, through the same go-git transport as the push.
func (s *Set) receivePackAllowed(ctx context.Context, rem *remote, ep *transport.Endpoint) error {
	err := s.retry(ctx, rem, "probe push access", func(ctx context.Context) error {
		t, err := client.NewClient(ep)
		if err != nil {
			return err
		}
		sess, err := t.NewReceivePackSession(ep, rem.auth)
		if err != nil {
			return err
		}
		defer sess.Close()
		_, err = sess.AdvertisedReferencesContext(ctx)
		return err
	})
	cred := "no credentials"
	if tokenEnv := s.spec.Repos[rem.name].TokenEnv; tokenEnv != "" {
		cred = "the token in " + tokenEnv
	}
	switch {
	case err == nil, errors.Is(err, transport.ErrEmptyRemoteRepository):
		return nil
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return &PushDeniedError{Repo: rem.name, Remote: rem.display, Err: err,
			Reason: "receive-pack answers 403 to " + cred + " (it may fetch but not push)"}
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return &PushDeniedError{Repo: rem.name, Remote: rem.display, Err: err,
			Reason: "receive-pack answers 401 to " + cred + " (it may fetch but not push)"}
	}
	return rem.errorf("probe push access to", err)
}

// Access modes of access(2).
const (
	accessWrite  = 0x2 // W_OK
	accessSearch = 0x1 // X_OK
)

// writable checks that this process may create the tag's ref and objects
// in the local repo at path, as git-receive-pack will, running as us:
// access(2) sees a read-only mount (EROFS), an immutable directory (EPERM)
// and mode bits (EACCES; root passes them, and would push). A path whose
// git directory is not found is left for the push to judge.
func writable(rem *remote, path, tag string) error {
	dir := gitDir(path)
	if dir == "" {
		return nil
	}
	// The ref is written in the deepest existing directory on its way:
	// refs/tags, or refs/tags/PREFIX for a tag with slashes.
	refs := filepath.Dir(filepath.Join(dir, "refs", "tags", filepath.FromSlash(tag)))
	for refs != dir {
		if fi, err := os.Stat(refs); err == nil && fi.IsDir() {
			break
		}
		refs = filepath.Dir(refs)
	}
	for _, d := range []string{refs, filepath.Join(dir, "objects")} {
		if err := syscall.Access(d, accessWrite|accessSearch); err != nil {
			rel, _ := filepath.Rel(dir, d)
			return &PushDeniedError{Repo: rem.name, Remote: rem.display, Err: err,
				Reason: fmt.Sprintf("cannot write %s: %v", filepath.ToSlash(rel), err)}
		}
	}
	return nil
}

// gitDir finds the git directory git-receive-pack would use for path, as
// git's enter_repo does: path/.git, path, path.git/.git, path.git; a .git
// file ("gitdir: …") is followed. It returns "" when none is a repo.
func gitDir(path string) string {
	for _, suffix := range []string{"/.git", "", ".git/.git", ".git"} {
		p := path + suffix
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			target, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
			if err != nil || !ok {
				continue
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(p), target)
			}
			p = target
		}
		if isGitDir(p) {
			return p
		}
	}
	return ""
}

func isGitDir(p string) bool {
	for _, sub := range []string{"objects", "refs"} {
		if fi, err := os.Stat(filepath.Join(p, sub)); err != nil || !fi.IsDir() {
			return false
		}
	}
	_, err := os.Stat(filepath.Join(p, "HEAD"))
	return err == nil
}

// createTag makes the annotated tag in the mirror, reusing one left there by
// an earlier attempt when it points at the same commit. The mirror is not
// published, so replacing a stale local tag there is safe.
func createTag(r *git.Repository, tag string, commit plumbing.Hash, tagger *object.Signature, msg string) error {
	ref, err := r.Reference(plumbing.NewTagReferenceName(tag), false)
	if err == nil {
		if c, err := peel(r, ref.Hash()); err == nil && c == commit && ref.Hash() != commit {
			return nil
		}
		if err := r.DeleteTag(tag); err != nil {
			return err
		}
	}
	_, err = r.CreateTag(tag, commit, &git.CreateTagOptions{Tagger: tagger, Message: msg})
	return err
}

// pushTag pushes one tag without force. It reports false when the remote
// already had exactly this tag object, which is also what a retry finds
// when an earlier attempt's push landed but its answer was lost.
func (s *Set) pushTag(ctx context.Context, r *git.Repository, name, tag string) (bool, error) {
	rem, err := s.remote(name)
	if err != nil {
		return false, err
	}
	ref := plumbing.NewTagReferenceName(tag).String()
	pushed := false
	err = s.retry(ctx, rem, "push tag "+tag, func(ctx context.Context) error {
		// The remote's messages (a hook's reason for refusing) arrive on
		// the progress side band; keep them for the error.
		var remoteMsg bytes.Buffer
		err := git.NewRemote(r.Storer, rem.config()).PushContext(ctx, &git.PushOptions{
			RefSpecs: []config.RefSpec{config.RefSpec(ref + ":" + ref)},
			Auth:     rem.auth,
			Progress: &remoteMsg,
		})
		switch {
		case errors.Is(err, git.NoErrAlreadyUpToDate):
			return nil
		case err == nil:
			pushed = true
			return nil
		case refused(err):
			reason := strings.TrimPrefix(err.Error(), "command error on "+ref+": ")
			if msg := strings.Join(strings.Fields(remoteMsg.String()), " "); msg != "" {
				reason += " (remote: " + msg + ")"
			}
			return &RejectedError{Repo: name, Remote: rem.display, Tag: tag, Reason: redact(reason, rem.token), Err: err}
		}
		return err
	})
	var rejected *RejectedError
	if err != nil && !errors.As(err, &rejected) {
		return false, rem.errorf("push tag "+tag+" to", err)
	}
	return pushed, err
}

// refused reports whether err is the remote's answer to a push it
// received (report-status "ng", an unpack failure), or go-git's refusal to
// replace a tag the remote has at another object: no retry changes those.
func refused(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "command error on ") || strings.HasPrefix(msg, "unpack error") ||
		strings.HasPrefix(msg, "non-fast-forward update: ") || errors.Is(err, git.ErrForceNeeded)
}
