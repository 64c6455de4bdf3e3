// Package githubrelease is the "github-release" stage: one GitHub release
// per repo for the run's version tag, with the repo's changelog as its body
// (see repos.Set.Releases).
package githubrelease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "github-release", New: func() stages.Stage { return &Stage{} }}

// Stage publishes the releases. Its outputs are, for each repo NAME, NAME:
// the outcome ("created", "adopted", "published" for an adopted draft, or
// "failed"), NAME.url: the release page, NAME.id: the release ID and, when
// GitHub's rate limits held it back, NAME.waited: the time waited ("2s").
// They are returned also when the stage fails, for the repos done so far.
type Stage struct {
	// Retry is the policy of the GitHub calls; the zero Policy is
	// retry.Default's. Each wait is written to the stage's log. Not a key
	// of the file: a test shortens the waits with it.
	Retry retry.Policy `yaml:"-"`
}

// Validate checks that the pipeline says where to publish.
func (s *Stage) Validate(spec *stages.Spec) error {
	if spec.GitHub.Owner == "" {
		return errors.New("github-release: github.owner is required")
	}
	return nil
}

// Run publishes the releases of env.Version, with changelogs up to
// env.Commits (the tags' commits when a repo is missing from it).
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	if env.Version == "" {
		return nil, stages.Permanent(errors.New("github-release: the run has no release version"))
	}
	log := env.Log
	if log == nil {
		log = io.Discard
	}
	// Repos are published at once: one line at a time to the log.
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(log, format+"\n", args...)
	}
	report := s.Retry.Report
	policy := s.Retry.Reporting(func(w retry.Wait) {
		logf("%s", w)
		if report != nil {
			report(w)
		}
	})
	set := repos.New(env.Spec, env.WorkDir, repos.WithLogger(env.Logger), repos.WithFence(env.Fence), repos.WithGitHubRetry(policy))
	if _, err := set.GitHub(); err != nil {
		// No token or no owner: nothing a retry changes.
		return nil, stages.Permanent(err)
	}
	rels, err := set.Releases(ctx, env.Version, env.Commits)
	out := stages.Outputs{}
	for _, r := range rels {
		out[r.Repo] = string(r.Outcome)
		if r.ID != 0 {
			out[r.Repo+".url"] = r.URL
			out[r.Repo+".id"] = strconv.FormatInt(r.ID, 10)
		}
		if r.RateLimited > 0 {
			out[r.Repo+".waited"] = r.RateLimited.Round(time.Millisecond).String()
		}
		line := fmt.Sprintf("%s: %s release %s of %s/%s", r.Repo, r.Outcome, r.Tag, env.Spec.GitHub.Owner, r.Repo)
		if r.URL != "" {
			line += " " + r.URL
		}
		if w := waited(r); w != "" {
			line += " (" + w + ")"
		}
		if r.Err != nil {
			line += ": " + r.Error
		}
		logf("%s", line)
	}
	return out, err
}

// waited says what a release waited for, "" when nothing: "waited 2s for
// GitHub's rate limit", "waited 1s to retry", or both.
func waited(r repos.Release) string {
	limit, other := r.RateLimited.Round(time.Millisecond), (r.Waited - r.RateLimited).Round(time.Millisecond)
	switch {
	case limit > 0 && other > 0:
		return fmt.Sprintf("waited %s for GitHub's rate limit and %s to retry", limit, other)
	case limit > 0:
		return fmt.Sprintf("waited %s for GitHub's rate limit", limit)
	case other > 0:
		return fmt.Sprintf("waited %s to retry", other)
	}
	return ""
}

// Doctor checks that GitHub answers for every repo with the token, and
// asks GitHub without one when the token variable is empty.
func (s *Stage) Doctor(ctx context.Context, spec *stages.Spec) []stages.Check {
	return repos.New(spec, "").CheckGitHub(ctx)
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
	_ stages.Doctor    = (*Stage)(nil)
)
