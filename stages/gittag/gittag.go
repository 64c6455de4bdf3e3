// Package gittag is the "git-tag" stage: it stamps the run's release version
// on every repo of the pipeline as an annotated tag at the run's pinned
// commits, all or none (see repos.Set.Tag).
package gittag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "git-tag", New: func() stages.Stage { return &Stage{} }}

// Stage tags every repo. Its outputs are each repo's outcome by repo name
// ("pushed", "adopted", "failed" or "skipped"), also when it fails, so the
// run records which repos were tagged. A resumed or repeated run checks the
// remotes again and pushes only the missing tags.
type Stage struct {
	// Parallel bounds the pushes at once; default repos.DefaultParallel.
	Parallel int `yaml:"parallel"`
}

// Validate checks the configuration against the pipeline.
func (s *Stage) Validate(spec *stages.Spec) error {
	if s.Parallel < 0 {
		return errors.New("with.parallel: must not be negative")
	}
	if len(spec.Repos) == 0 {
		return errors.New("git-tag: the pipeline has no repos to tag")
	}
	return nil
}

// Run tags the repos with env.Version at env.Commits.
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	if env.Version == "" {
		return nil, stages.Permanent(errors.New("git-tag: the run has no release version"))
	}
	set := repos.New(env.Spec, env.WorkDir, repos.WithLogger(env.Logger), repos.WithParallel(s.Parallel), repos.WithFence(env.Fence))
	log := env.Log
	if log == nil {
		log = io.Discard
	}
	results, err := set.Tag(ctx, env.Version, env.Commits, repos.TagOptions{})
	out := stages.Outputs{}
	for _, r := range results {
		out[r.Repo] = string(r.Outcome)
		line := fmt.Sprintf("%s: %s %s at %s", r.Repo, r.Outcome, r.Tag, short(r.Commit))
		if r.Err != nil {
			line += ": " + r.Error
		}
		fmt.Fprintln(log, line)
	}
	if err != nil {
		var conflict *repos.ConflictError
		var rejected *repos.RejectedError
		if errors.As(err, &conflict) || errors.As(err, &rejected) || results == nil {
			// A tag at another commit, a remote that refuses the push
			// (a hook), or bad input: another attempt would meet the
			// same refusal until someone changes the remote. The run
			// stays resumable; failures on the way were retried inside.
			return out, stages.Permanent(err)
		}
		return out, err
	}
	return out, nil
}

// Doctor checks that every repo's remote answers with its credentials and
// would take a tag push from them, which the stage checks again before it
// pushes anything. The push probe of a remote that does not answer is left
// out: the remote's own check names the failure.
func (s *Stage) Doctor(ctx context.Context, spec *stages.Spec) []stages.Check {
	set := repos.New(spec, "")
	var checks []stages.Check
	for _, name := range spec.RepoNames() {
		var once sync.Once
		var reachErr error
		reach := func(ctx context.Context) error {
			once.Do(func() { reachErr = set.Reach(ctx, name) })
			return reachErr
		}
		checks = append(checks,
			stages.Check{Name: "git remote of repo " + name, Run: reach},
			stages.Check{Name: "tag push to repo " + name + " allowed", Run: func(ctx context.Context) error {
				if err := reach(ctx); err != nil {
					return fmt.Errorf("remote of repo %s: %w", name, stages.ErrNotChecked)
				}
				return set.PushAllowed(ctx, name)
			}},
		)
	}
	return checks
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
	_ stages.Doctor    = (*Stage)(nil)
)
