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

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-github/v60/github"

	"github.com/sweepboard/release/pipeline/retry"
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
	// Waited is the time spent waiting between attempts; RateLimited is
	// the part of it GitHub's rate limits asked for.
	Waited      time.Duration `json:"waited,omitempty"`
	RateLimited time.Duration `json:"rateLimited,omitempty"`
	Err         error         `json:"-"`
	Error       string        `json:"error,omitempty"`
}

// GitHub publishes releases through the GitHub REST API at the pipeline's
// github.api_url. The token never leaves the Authorization header: errors
// are scrubbed of it as a second line of defence.
type GitHub struct {
	client   *github.Client
	api      string // the API's base URL, for messages
	owner    string
	prefix   string // the tag prefix
	token    string // "" for a client without one (release doctor)
	tokenEnv string
	logger   *slog.Logger
	retry    retry.Policy
}

// WithGitHubRetry sets the retry policy of every GitHub call. The zero
// Policy is retry.Default's: 5 attempts from a 1s backoff, a wait GitHub
// asks for (Retry-After, a rate limit's reset) honoured up to 2m, and 1m
// after a secondary rate limit that names no wait. A Report in p is told
// of each wait, the error in it scrubbed of the token.
func WithGitHubRetry(p retry.Policy) Option {
	return func(s *Set) { s.ghRetry = p }
}

// GitHub returns a client for the pipeline's github block: base URL
// github.api_url (default https://api.github.com/), owner github.owner,
// token from the variable github.token_env (default GITHUB_TOKEN). Its HTTP
// connections are bounded by the file's timeouts.
func (s *Set) GitHub() (*GitHub, error) {
	g, err := s.gitHub()
	if err != nil {
		return nil, err
	}
	if g.token == "" {
		return nil, g.noToken()
	}
	return g, nil
}

// gitHub is GitHub without the need for a token: with the variable empty,
// the client asks GitHub without one.
func (s *Set) gitHub() (*GitHub, error) {
	cfg := s.spec.GitHub
	if cfg.Owner == "" {
		return nil, errors.New("github: no owner in the pipeline file")
	}
	env := cfg.TokenEnv
	if env == "" {
		env = "GITHUB_TOKEN"
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
	token := s.getenv(env)
	c := github.NewClient(s.spec.Timeouts.Client())
	if token != "" {
		c = c.WithAuthToken(token)
	}
	c.BaseURL = base
	return &GitHub{
		client: c, api: base.String(), owner: cfg.Owner, prefix: s.TagPrefix(),
		token: token, tokenEnv: env, logger: s.logger, retry: s.ghRetry,
	}, nil
}

func (g *GitHub) noToken() error {
	return fmt.Errorf("github: token variable %s is empty", g.tokenEnv)
}

// Releases publishes one GitHub release per repo for version's tag, with
// the repo's changelog as its body (see Changelogs for commits), pointed
// at the tagged commit. The GitHub repository is OWNER/NAME, NAME being the
// repo's name in the pipeline file. A release that already exists for the
// tag is adopted unchanged; a draft for the tag (left by a crash) is
// adopted and published. Results come back in repo order, also when err is
// not nil.
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
		rel, err := gh.Release(ctx, NewRelease{Repo: name, Tag: cl.Tag, Version: v, Commit: cl.Commit, Body: cl.Markdown()})
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

// NewRelease is what one repo's release is made of.
type NewRelease struct {
	Repo    string
	Tag     string
	Version *semver.Version // a pre-release is published as one, and never as the latest
	// Commit is the commit the tag points at: the release's
	// target_commitish, so that GitHub creates a missing tag there rather
	// than at the default branch's head.
	Commit string
	Body   string
}

// Release makes sure OWNER/repo has a published release for the tag: it
// adopts a published one as it is, publishes a draft with the body, or
// creates one. Every attempt looks for the release first, so a create
// whose response was lost is adopted rather than made twice. The release
// is marked latest unless GitHub's latest release has a newer version.
//
// Failures are retried by the policy of WithGitHubRetry: GitHub's primary
// and secondary rate limits (403 or 429) are waited out as GitHub asks, up
// to the policy's MaxWait; each wait is logged, and the result says how
// long it waited.
func (g *GitHub) Release(ctx context.Context, nr NewRelease) (Release, error) {
	out := Release{Repo: nr.Repo, Tag: nr.Tag}
	what := fmt.Sprintf("publish release %s of %s/%s", nr.Tag, g.owner, nr.Repo)
	report := g.retry.Report
	policy := g.retry.With(classify).Reporting(func(w retry.Wait) {
		w.Err = g.scrub(w.Err)
		out.Waited += w.Wait
		if w.Limited {
			out.RateLimited += w.Wait
		}
		g.logger.Warn("github release: retry", "repo", nr.Repo, "tag", nr.Tag, "attempt", w.Attempt, "of", w.Of,
			"reason", w.Reason, "wait", w.Wait.Round(time.Millisecond), "asked", w.Asked, "err", w.Err)
		if report != nil {
			report(w)
		}
	})
	var rel *github.RepositoryRelease
	err := policy.Do(ctx, what, func(ctx context.Context) error {
		var err error
		rel, out.Outcome, err = g.ensure(ctx, nr)
		return err
	})
	if err == nil {
		out.ID, out.URL = rel.GetID(), rel.GetHTMLURL()
		g.logger.Info("github release", "repo", nr.Repo, "tag", nr.Tag, "id", out.ID, "outcome", out.Outcome,
			"waited", out.Waited.Round(time.Millisecond), "rate_limited", out.RateLimited.Round(time.Millisecond))
		return out, nil
	}
	var tooLong *retry.TooLongError
	if !errors.As(err, &tooLong) { // which names the call already
		err = fmt.Errorf("%s: %w", what, err)
	}
	err = g.scrub(err)
	out.Outcome, out.Err, out.Error = Failed, err, err.Error()
	return out, err
}

// ensure is one attempt of Release.
func (g *GitHub) ensure(ctx context.Context, nr NewRelease) (*github.RepositoryRelease, Outcome, error) {
	rel, err := g.find(ctx, nr.Repo, nr.Tag)
	if err != nil {
		return nil, "", err
	}
	if rel != nil && !rel.GetDraft() {
		return rel, Adopted, nil
	}
	latest, err := g.makeLatest(ctx, nr)
	if err != nil {
		return nil, "", err
	}
	want := &github.RepositoryRelease{
		TagName: github.String(nr.Tag), Name: github.String(nr.Tag), Body: github.String(nr.Body),
		Draft: github.Bool(false), Prerelease: github.Bool(nr.Version.Prerelease() != ""),
		MakeLatest: github.String(latest),
	}
	if nr.Commit != "" {
		want.TargetCommitish = github.String(nr.Commit)
	}
	if rel != nil {
		rel, _, err = g.client.Repositories.EditRelease(ctx, g.owner, nr.Repo, rel.GetID(), want)
		return rel, Published, err
	}
	rel, _, err = g.client.Repositories.CreateRelease(ctx, g.owner, nr.Repo, want)
	if alreadyExists(err) {
		// Made meanwhile, by this run's lost create or by another: the
		// next look finds it.
		if found, ferr := g.find(ctx, nr.Repo, nr.Tag); ferr == nil && found != nil && !found.GetDraft() {
			return found, Adopted, nil
		}
	}
	return rel, Created, err
}

// makeLatest is the release's make_latest: "false" for a pre-release and
// for a version older than that of the repo's latest release on GitHub,
// else "true". A latest release whose tag is no version of this pipeline
// does not hold the new one back.
func (g *GitHub) makeLatest(ctx context.Context, nr NewRelease) (string, error) {
	if nr.Version.Prerelease() != "" {
		return "false", nil
	}
	latest, _, err := g.client.Repositories.GetLatestRelease(ctx, g.owner, nr.Repo)
	if status(err) == http.StatusNotFound {
		return "true", nil
	}
	if err != nil {
		return "", err
	}
	lv, err := ParseVersion(latest.GetTagName(), g.prefix)
	if err != nil || !nr.Version.LessThan(lv) {
		return "true", nil
	}
	g.logger.Info("github release: not the latest", "repo", nr.Repo, "tag", nr.Tag, "latest", latest.GetTagName())
	return "false", nil
}

// find returns the release for tag, nil when there is none. Get-by-tag
// does not return drafts, so a miss lists the releases to find one.
func (g *GitHub) find(ctx context.Context, repo, tag string) (*github.RepositoryRelease, error) {
	rel, _, err := g.client.Repositories.GetReleaseByTag(ctx, g.owner, repo, tag)
	if err == nil {
		return rel, nil
	}
	if status(err) != http.StatusNotFound {
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

// status is the HTTP status of GitHub's answer in err, 0 when there was
// none.
func status(err error) int {
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}

func alreadyExists(err error) bool {
	var er *github.ErrorResponse
	if !errors.As(err, &er) || status(err) != http.StatusUnprocessableEntity {
		return false
	}
	for _, e := range er.Errors {
		if e.Code == "already_exists" {
			return true
		}
	}
	return false
}

// classify is the retry classifier of go-github's errors. GitHub documents
// 403 or 429 for both of its rate limits: the primary one (the hourly
// budget, X-RateLimit-Remaining: 0, over at X-RateLimit-Reset) and the
// secondary one (too much at once, with Retry-After or with no wait named,
// which means at least a minute). go-github makes a RateLimitError of a 403
// primary and an AbuseRateLimitError of a 403 secondary, and returns the
// same, without asking GitHub, while it believes a limit is still on; a
// 429 stays an ErrorResponse, read here from its headers. A 422
// already_exists is worth an attempt at once: its next look finds the
// release.
func classify(err error) (retry.Verdict, bool) {
	var primary *github.RateLimitError
	var secondary *github.AbuseRateLimitError
	var er *github.ErrorResponse
	switch {
	case errors.As(err, &primary):
		v := retry.Verdict{Retry: true, Limited: true, Reason: "primary rate limit (403)"}
		if reset := primary.Rate.Reset.Time; !reset.IsZero() {
			// The reset is a whole second; a second more covers clock skew.
			v.After = max(time.Until(reset)+time.Second, time.Millisecond)
		}
		return v, true
	case errors.As(err, &secondary):
		v := retry.Verdict{Retry: true, Limited: true, Reason: "secondary rate limit (403)"}
		if secondary.RetryAfter != nil {
			v.After = max(*secondary.RetryAfter, time.Millisecond)
		}
		return v, true
	case errors.As(err, &er) && er.Response != nil:
		code := er.Response.StatusCode
		if alreadyExists(err) {
			return retry.Verdict{Retry: true, After: time.Millisecond, Reason: "422 already_exists"}, true
		}
		after, limited := retry.Asked(code, er.Response.Header, time.Now())
		v := (&retry.StatusError{Status: code, After: after, Limited: limited}).Verdict()
		if limited {
			kind := "secondary"
			if er.Response.Header.Get("X-RateLimit-Remaining") == "0" {
				kind = "primary"
			}
			v.Reason = fmt.Sprintf("%s rate limit (%d)", kind, code)
		}
		return v, true
	}
	return retry.Verdict{}, false
}

// scrub removes the token from an error's text, in any form redact knows,
// in case a proxy or server echoed it back.
func (g *GitHub) scrub(err error) error {
	if err == nil || g.token == "" {
		return err
	}
	return redactError(err, g.token)
}
