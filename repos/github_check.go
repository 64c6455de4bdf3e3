package repos

import (
	"context"
	"fmt"

	"github.com/google/go-github/v60/github"
)

// Check asks GitHub for one release of OWNER/repo with the token, for
// `release doctor`: a wrong token or a missing repository shows here,
// named, without the token.
func (g *GitHub) Check(ctx context.Context, repo string) error {
	_, _, err := g.client.Repositories.ListReleases(ctx, g.owner, repo, &github.ListOptions{PerPage: 1})
	if err != nil {
		return g.scrub(fmt.Errorf("list releases of %s/%s: %w", g.owner, repo, err))
	}
	return nil
}
