package repos

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-github/v60/github"

	"github.com/sweepboard/release/stages"
)

// CheckGitHub is `release doctor`'s verdict on GitHub, one check per repo,
// asked at once: with the token, whether it may list the releases of
// OWNER/NAME (a wrong token or a missing repository shows, named, without
// the token). Without a token it still asks GitHub, once and without one
// (GET /rate_limit, which costs no request of the budget), so that the
// verdict says whether GitHub answers; the check fails naming the empty
// variable either way, since publishing releases needs it. Each call is
// bounded by the file's timeouts and by ctx.
func (s *Set) CheckGitHub(ctx context.Context) []stages.Check {
	api := s.spec.GitHub.APIURL
	if api == "" {
		api = "https://api.github.com/"
	}
	g, err := s.gitHub()
	if err != nil {
		return []stages.Check{{Name: "github " + api, Err: err}}
	}
	if g.token == "" {
		return []stages.Check{{Name: "github " + g.api, Err: g.checkAnonymous(ctx)}}
	}
	names := s.Names()
	checks := make([]stages.Check, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		checks[i].Name = "github releases of " + g.owner + "/" + name
		wg.Go(func() { checks[i].Err = g.Check(ctx, name) })
	}
	wg.Wait()
	return checks
}

// checkAnonymous asks GitHub's rate limit without a token and returns the
// empty token variable's error with what GitHub said.
func (g *GitHub) checkAnonymous(ctx context.Context) error {
	rl, _, err := g.client.RateLimit.Get(ctx)
	switch {
	case err == nil && rl.GetCore() != nil:
		core := rl.GetCore()
		return fmt.Errorf("%w; GitHub answers at %s without it (%d of %d requests an hour left)", g.noToken(), g.api, core.Remaining, core.Limit)
	case err == nil, answered(err):
		// Any answer says the API is there; GitHub Enterprise without rate
		// limiting answers 404.
		return fmt.Errorf("%w; GitHub answers at %s without it", g.noToken(), g.api)
	}
	return fmt.Errorf("%w, and GitHub does not answer at %s: %w", g.noToken(), g.api, err)
}

// answered says err is GitHub's answer rather than a failure to reach it.
func answered(err error) bool {
	var er *github.ErrorResponse
	var primary *github.RateLimitError
	var secondary *github.AbuseRateLimitError
	return errors.As(err, &er) || errors.As(err, &primary) || errors.As(err, &secondary)
}

// Check asks GitHub for one release of OWNER/repo with the token, for
// `release doctor`: a wrong token or a missing repository shows here,
// named, without the token. It makes one attempt.
func (g *GitHub) Check(ctx context.Context, repo string) error {
	_, _, err := g.client.Repositories.ListReleases(ctx, g.owner, repo, &github.ListOptions{PerPage: 1})
	if err != nil {
		return g.scrub(fmt.Errorf("list releases of %s/%s: %w", g.owner, repo, err))
	}
	return nil
}
