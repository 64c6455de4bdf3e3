package repos

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"

	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
)

// Every git network operation (fetch, ls-remote, push, the receive-pack
// probe) is bounded by the pipeline's timeouts.
//
// go-git v5 finds the transport of a URL in one global table
// (client.Protocols) and has no per-call or per-remote option to give
// Fetch, List or Push an HTTP client. So the table's http and https
// entries are replaced, once, by a client whose transport takes its bounds
// from each request's context: a Set puts its pipeline's timeouts there
// (withDeadlines) before every call, and a request that carries none gets
// the defaults. The bounds stay per call, and nothing writes the global
// table while a call may read it.

var installHTTP sync.Once

// installGitHTTP puts the deadline-aware client in go-git's table. New
// calls it, so it has run before any Set reaches a remote.
func installGitHTTP() {
	installHTTP.Do(func() {
		c := githttp.NewClient(&http.Client{Transport: &byContext{}})
		client.InstallProtocol("http", c)
		client.InstallProtocol("https", c)
	})
}

type deadlinesKey struct{}

// withDeadlines has the git calls made with ctx bounded by d.
func withDeadlines(ctx context.Context, d deadline.Deadlines) context.Context {
	return context.WithValue(ctx, deadlinesKey{}, d.Or(deadline.Deadlines{}))
}

// byContext is an HTTP transport that sends each request through a
// transport with the bounds its context carries, one pooled transport per
// set of bounds.
type byContext struct {
	transports sync.Map // deadline.Deadlines → *http.Transport
}

func (b *byContext) RoundTrip(req *http.Request) (*http.Response, error) {
	d, ok := req.Context().Value(deadlinesKey{}).(deadline.Deadlines)
	if !ok {
		d = deadline.Deadlines{}.Or(deadline.Deadlines{})
	}
	t, ok := b.transports.Load(d)
	if !ok {
		t, _ = b.transports.LoadOrStore(d, d.Transport())
	}
	return t.(*http.Transport).RoundTrip(req)
}

// sshDeadline gives an ssh remote's connect the pipeline's bound. go-git
// dials with the client config's Timeout and nothing else; the handshake
// after the connect has no bound of its own there.
type sshDeadline struct {
	gitssh.AuthMethod
	connect time.Duration
}

func (a sshDeadline) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := a.AuthMethod.ClientConfig()
	if err == nil && c.Timeout == 0 {
		c.Timeout = a.connect
	}
	return c, err
}

// classifyGit judges go-git's errors for the retry policy. Its
// UnexpectedError does not unwrap, so it is opened by hand; an HTTP answer
// inside is a *githttp.Err, judged by its status (5xx, 408 and 429 are
// worth another attempt, as is a wait the server asked for). 401, 403 and
// 404 come as go-git's own sentinels, which no retry changes.
func classifyGit(err error) (retry.Verdict, bool) {
	var ue *plumbing.UnexpectedError
	opened := false
	for errors.As(err, &ue) && ue.Err != nil {
		err, opened = ue.Err, true
	}
	var he *githttp.Err
	if errors.As(err, &he) && he.Response != nil {
		se := &retry.StatusError{Status: he.StatusCode()}
		se.After, se.Limited = retry.Asked(se.Status, he.Response.Header, time.Now())
		return se.Verdict(), true
	}
	if opened {
		return retry.Classify(err), true
	}
	return retry.Verdict{}, false
}

// retry runs f, once more after each failure on the way to or from the
// remote, up to s.gitAttempts in all, backing off from s.gitBackoff: the
// one retry policy, with go-git's errors judged by classifyGit. An answer
// from the remote (a refusal, bad credentials, no such repository), or a
// cancelled ctx, ends it at once.
func (s *Set) retry(ctx context.Context, rem *remote, action string, f func(ctx context.Context) error) error {
	p := retry.Policy{Attempts: s.gitAttempts, Backoff: s.gitBackoff, MaxBackoff: 10 * time.Second}.With(classifyGit)
	p = p.Reporting(func(w retry.Wait) {
		s.logger.Warn("git: retry", "action", action, "repo", rem.name, "remote", rem.display,
			"attempt", w.Attempt, "of", w.Of, "wait", w.Wait, "reason", w.Reason, "err", redactError(w.Err, rem.token))
	})
	return p.Do(withDeadlines(ctx, s.spec.Timeouts), action+" "+rem.name, f)
}
