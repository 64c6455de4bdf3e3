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

	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "github-release", New: func() stages.Stage { return &Stage{} }}

// Stage publishes the releases. Its outputs are, for each repo NAME, NAME:
// the outcome ("created", "adopted", "published" for an adopted draft, or
// "failed"), NAME.url: the release page and NAME.id: the release ID. They are
// returned also when the stage fails, for the repos done so far.
type Stage struct{}

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
	set := repos.New(env.Spec, env.WorkDir, repos.WithLogger(env.Logger), repos.WithFence(env.Fence))
	if _, err := set.GitHub(); err != nil {
		// No token or no owner: nothing a retry changes.
		return nil, stages.Permanent(err)
	}
	log := env.Log
	if log == nil {
		log = io.Discard
	}
	rels, err := set.Releases(ctx, env.Version, env.Commits)
	out := stages.Outputs{}
	for _, r := range rels {
		out[r.Repo] = string(r.Outcome)
		if r.ID != 0 {
			out[r.Repo+".url"] = r.URL
			out[r.Repo+".id"] = strconv.FormatInt(r.ID, 10)
		}
		line := fmt.Sprintf("%s: %s release %s", r.Repo, r.Outcome, r.Tag)
		if r.URL != "" {
			line += " " + r.URL
		}
		if r.Err != nil {
			line += ": " + r.Error
		}
		fmt.Fprintln(log, line)
	}
	return out, err
}

// Doctor checks that GitHub answers for every repo with the token.
func (s *Stage) Doctor(ctx context.Context, spec *stages.Spec) []stages.Check {
	gh, err := repos.New(spec, "").GitHub()
	if err != nil {
		return []stages.Check{{Name: "github " + spec.GitHub.APIURL, Err: err}}
	}
	var checks []stages.Check
	for _, name := range spec.RepoNames() {
		checks = append(checks, stages.Check{Name: "github releases of " + spec.GitHub.Owner + "/" + name, Err: gh.Check(ctx, name)})
	}
	return checks
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
	_ stages.Doctor    = (*Stage)(nil)
)
