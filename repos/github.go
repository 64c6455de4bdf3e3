package repos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"
)

// Release outcomes, beside Adopted and Failed.
const (
	Created   Outcome = "created"   // a new release was created
	Published Outcome = "published" // a draft for the tag was adopted and published
)

// Release is the outcome of publishing one repo's GitHub release.
type Release struct {
	Repo    string  `json:"repo"`
	Tag     string  `json:"tag"`
	ID      int64   `json:"id,omitempty"`
	URL     string  `json:"url,omitempty"` // the release page
	Outcome Outcome `json:"outcome"`       // created, adopted, published or failed
	Err     error   `json:"-"`
	Error   string  `json:"error,omitempty"`
}

// GitHub publishes releases through the GitHub REST API at the pipeline's
// github.api_url. The token never leaves the Authorization header: errors
// are scrubbed of it as a second line of defence.
type GitHub struct {
	client   *github.Client
	owner    string
	token    string
	logger   *slog.Logger
	attempts int
	backoff  time.Duration
	maxWait  time.Duration
}

// WithGitHubRetry sets how many attempts a release gets and the first
// backoff, doubled after each failure (default 5 attempts from 1s). A
// Retry-After from GitHub overrides the backoff.
func WithGitHubRetry(attempts int, backoff time.Duration) Option {
	return func(s *Set) {
		if attempts > 0 {
			s.ghAttempts = attempts
		}
		if backoff > 0 {
			s.ghBackoff = backoff
		}
	}
}

// GitHub returns a client for the pipeline's github block: base URL
// github.api_url (default https://api.github.com/), owner github.owner,
// token from the variable github.token_env (default GITHUB_TOKEN).
func (s *Set) GitHub() (*GitHub, error) {
	cfg := s.spec.GitHub
	if cfg.Owner == "" {
		return nil, errors.New("github: no owner in the pipeline file")
	}
	env := cfg.TokenEnv
	if env == "" {
		env = "GITHUB_TOKEN"
	}
	token := s.getenv(env)
	if token == "" {
		return nil, fmt.Errorf("github: token variable %s is empty", env)
	}
	api := cfg.APIURL
	if api == "" {
		api = "https://api.github.com/"
	}
	if !strings.HasSuffix(api, "/") {
		api += "/"
	}
	base, err := url.Parse(api)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("github: api_url %q is not a URL", cfg.APIURL)
	}
	c := github.NewClient(&http.Client{Timeout: 30 * time.Second}).WithAuthToken(token)
	c.BaseURL = base
	return &GitHub{
		client: c, owner: cfg.Owner, token: token, logger: s.logger,
		attempts: s.ghAttempts, backoff: s.ghBackoff, maxWait: 2 * time.Minute,
	}, nil
}

// Releases publishes one GitHub release per repo for version's tag, with
// the repo's changelog as its body (see Changelogs for commits). The GitHub
// repository is OWNER/NAME, NAME being the repo's name in the pipeline
// file. A release that already exists for the tag is adopted unchanged; a
// draft for the tag (left by a crash) is adopted and published. Results come
// back in repo order, also when err is not nil.
func (s *Set) Releases(ctx context.Context, version string, commits map[string]string) ([]Release, error) {
	gh, err := s.GitHub()
	if err != nil {
		return nil, err
	}
	v, err := ParseVersion(version, s.TagPrefix())
	if err != nil {
		return nil, err
	}
	cls, err := s.Changelogs(ctx, version, commits)
	if err != nil {
		return nil, err
	}
	out := make([]Release, len(cls))
	byRepo := map[string]int{}
	names := make([]string, len(cls))
	for i, cl := range cls {
		byRepo[cl.Repo], names[i] = i, cl.Repo
	}
	var mu sync.Mutex
	err = s.each(ctx, names, func(ctx context.Context, name string) error {
		cl := cls[byRepo[name]]
		if err := s.checkFence(ctx); err != nil {
			mu.Lock()
			out[byRepo[name]] = Release{Repo: name, Tag: cl.Tag, Outcome: Failed, Err: err, Error: err.Error()}
			mu.Unlock()
			return fmt.Errorf("publish release %s of repo %s: %w", cl.Tag, name, err)
		}
		rel, err := gh.Release(ctx, name, cl.Tag, cl.Markdown(), v.Prerelease() != "")
		mu.Lock()
		out[byRepo[name]] = rel
		mu.Unlock()
		return err
	})
	if err != nil {
		return out, err
	}
	return out, nil
}

// Release makes sure OWNER/repo has a published release for tag: it adopts
// a published one as it is, publishes a draft with body, or creates one.
// Every attempt looks for the release first, so a create whose response was
// lost is adopted rather than made twice.
func (g *GitHub) Release(ctx context.Context, repo, tag, body string, prerelease bool) (Release, error) {
	out := Release{Repo: repo, Tag: tag}
	var err error
	attempt := 1
	for ; ; attempt++ {
		var rel *github.RepositoryRelease
		rel, out.Outcome, err = g.ensure(ctx, repo, tag, body, prerelease)
		if err == nil {
			out.ID, out.URL = rel.GetID(), rel.GetHTMLURL()
			g.logger.Info("github release", "repo", repo, "tag", tag, "id", out.ID, "outcome", out.Outcome)
			return out, nil
		}
		wait, retry := g.retryAfter(err, attempt)
		if !retry || attempt >= g.attempts || ctx.Err() != nil {
			break
		}
		g.logger.Warn("github release: retry", "repo", repo, "tag", tag, "attempt", attempt, "wait", wait, "err", g.scrub(err))
		if err := sleep(ctx, wait); err != nil {
			break
		}
	}
	what := fmt.Sprintf("publish release %s of %s/%s", tag, g.owner, repo)
	if attempt > 1 {
		what += fmt.Sprintf(" (%d attempts)", attempt)
	}
	err = g.scrub(fmt.Errorf("%s: %w", what, err))
	out.Outcome, out.Err, out.Error = Failed, err, err.Error()
	return out, err
}

// ensure is one attempt of Release.
func (g *GitHub) ensure(ctx context.Context, repo, tag, body string, prerelease bool) (*github.RepositoryRelease, Outcome, error) {
	rel, err := g.find(ctx, repo, tag)
	if err != nil {
		return nil, "", err
	}
	switch {
	case rel != nil && !rel.GetDraft():
		return rel, Adopted, nil
	case rel != nil:
		rel, _, err = g.client.Repositories.EditRelease(ctx, g.owner, repo, rel.GetID(), &github.RepositoryRelease{
			Name: github.String(tag), Body: github.String(body), Draft: github.Bool(false), Prerelease: github.Bool(prerelease),
		})
		return rel, Published, err
	}
	rel, _, err = g.client.Repositories.CreateRelease(ctx, g.owner, repo, &github.RepositoryRelease{
		TagName: github.String(tag), Name: github.String(tag), Body: github.String(body),
		Draft: github.Bool(false), Prerelease: github.Bool(prerelease),
	})
	return rel, Created, err
}

// find returns the release for tag, nil when there is none. Get-by-tag
// does not return drafts, so a miss lists the releases to find one.
func (g *GitHub) find(ctx context.Context, repo, tag string) (*github.RepositoryRelease, error) {
	rel, _, err := g.client.Repositories.GetReleaseByTag(ctx, g.owner, repo, tag)
	if err == nil {
		return rel, nil
	}
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil || er.Response.StatusCode != http.StatusNotFound {
		return nil, err
	}
	opts := &github.ListOptions{PerPage: 100}
	for {
		rels, resp, err := g.client.Repositories.ListReleases(ctx, g.owner, repo, opts)
		if err != nil {
			return nil, err
		}
		for _, r := range rels {
			if r.GetTagName() == tag {
				return r, nil
			}
		}
		if resp.NextPage == 0 {
			return nil, nil
		}
		opts.Page = resp.NextPage
	}
}

// retryAfter says whether err is worth another attempt and how long to wait
// first: a secondary rate limit's Retry-After, a primary limit's reset (if
// within maxWait), no wait after 422 already_exists (the next look finds
// the release), else exponential backoff for 5xx and network errors.
func (g *GitHub) retryAfter(err error, attempt int) (time.Duration, bool) {
	backoff := min(g.backoff<<(attempt-1), 30*time.Second)
	var abuse *github.AbuseRateLimitError
	var limit *github.RateLimitError
	var er *github.ErrorResponse
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 0, false
	case errors.As(err, &abuse):
		if abuse.RetryAfter != nil {
			return *abuse.RetryAfter, *abuse.RetryAfter <= g.maxWait
		}
		return backoff, true
	case errors.As(err, &limit):
		wait := time.Until(limit.Rate.Reset.Time)
		return max(wait, 0), wait <= g.maxWait
	case errors.As(err, &er):
		status := 0
		if er.Response != nil {
			status = er.Response.StatusCode
		}
		switch {
		case status >= 500:
			return backoff, true
		case status == http.StatusUnprocessableEntity:
			for _, e := range er.Errors {
				if e.Code == "already_exists" {
					return 0, true
				}
			}
		case status == http.StatusForbidden || status == http.StatusTooManyRequests:
			if ra := er.Response.Header.Get("Retry-After"); ra != "" {
				var secs int
				if _, err := fmt.Sscan(ra, &secs); err == nil {
					wait := time.Duration(secs) * time.Second
					return wait, wait <= g.maxWait
				}
			}
		}
		return 0, false
	}
	// Network errors, including a connection closed before the response.
	return backoff, true
}

// scrub removes the token from an error's text, in any form redact knows,
// in case a proxy or server echoed it back.
func (g *GitHub) scrub(err error) error {
	return redactError(err, g.token)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
