package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/repos"
)

// schedule fires the pipeline's schedules until ctx ends. Fires missed
// while no server ran are not caught up, as cron does; when the process
// was asleep across several fires of one schedule, only the last runs.
func (s *server) schedule(ctx, runCtx context.Context) {
	if len(s.p.Schedules) == 0 {
		return
	}
	last := s.now()
	for {
		next, ok := s.nextFire(last)
		if !ok {
			return
		}
		timer := time.NewTimer(max(next.Sub(s.now()), 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		now := s.now()
		if now.Before(next) { // the wall clock moved back
			continue
		}
		s.tick(runCtx, last, now)
		last = now
	}
}

// nextFire is the earliest fire of any schedule after t.
func (s *server) nextFire(t time.Time) (time.Time, bool) {
	var first time.Time
	for _, name := range sortedKeys(s.p.Schedules) {
		next, err := s.p.Schedules[name].Next(t)
		if err != nil || next.IsZero() {
			continue
		}
		if first.IsZero() || next.Before(first) {
			first = next
		}
	}
	return first, !first.IsZero()
}

// fire is one due fire of a schedule.
type fire struct {
	Schedule string
	At       time.Time
}

// key names a fire in the store: the same for every server.
func (fr fire) key() string {
	return "schedule/" + fr.Schedule + "/" + fr.At.UTC().Format(time.RFC3339)
}

// tick starts the fires due in (from, to]: each one this server claims
// runs in the background.
func (s *server) tick(ctx context.Context, from, to time.Time) []fire {
	var started []fire
	for _, name := range sortedKeys(s.p.Schedules) {
		sched := s.p.Schedules[name]
		fires, err := sched.Fires(from, to)
		if err != nil {
			s.log.Error("schedule", "schedule", name, "err", err)
			continue
		}
		if len(fires) == 0 {
			continue
		}
		fr := fire{Schedule: name, At: fires[len(fires)-1]}
		if len(fires) > 1 {
			s.log.Warn("schedule fired several times while the server was not looking; only the last runs", "schedule", name, "fires", len(fires))
		}
		if !s.claim(ctx, fr) {
			continue
		}
		started = append(started, fr)
		s.goRun(func() { s.runScheduled(ctx, fr, sched) })
	}
	return started
}

// claim takes a fire in the store, for good: a lease that is never given
// up and outlives any clock skew. Another server that claims the same
// fire is refused.
func (s *server) claim(ctx context.Context, fr fire) bool {
	_, err := s.st.AcquireLease(ctx, fr.key(), s.holder, claimTTL)
	var held *pipeline.HeldError
	switch {
	case errors.As(err, &held):
		s.log.Info("fire claimed by another server", "schedule", fr.Schedule, "at", fr.At.UTC(), "by", held.Holder)
		return false
	case err != nil:
		s.log.Error("claim fire", "schedule", fr.Schedule, "at", fr.At.UTC(), "err", err)
		return false
	}
	return true
}

// runScheduled starts the run of a fire, or records it skipped with the
// reason when there is nothing new to release or an environment is frozen.
func (s *server) runScheduled(ctx context.Context, fr fire, sched pipeline.Schedule) {
	log := s.log.With("schedule", fr.Schedule, "at", fr.At.UTC())
	out := &logWriter{log: log}
	run, reason, err := s.prepareScheduled(ctx, fr, sched, s.subFactory(out, out, "schedule "+fr.Schedule))
	switch {
	case err != nil:
		log.Error("scheduled run not started", "err", err)
		return
	case reason != "":
		if err := s.recordSkipped(ctx, fr, run, reason); err != nil {
			log.Error("record skipped run", "err", err)
		}
		return
	}
	log.Info("starting scheduled run", "run", run.ID, "version", run.Version)
	s.track(run.ID)
	defer s.untrack(run.ID)
	sub := s.subFactory(out, out, "schedule "+fr.Schedule)
	p := s.p
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		log.Error("plan", "err", err)
		return
	}
	err = execute(ctx, sub, p, plan, run, execOptions{parallel: s.parallel, create: true, wait: true})
	if err != nil {
		log.Info("scheduled run stopped", "run", run.ID, "status", run.Status, "err", err)
	}
}

// prepareScheduled is release run's preparation for a fire: the heads, the
// version, the freeze check. It returns the run to start, or the reason to
// skip the fire (with a run carrying what was read).
func (s *server) prepareScheduled(ctx context.Context, fr fire, sched pipeline.Schedule, f *Factory) (*pipeline.Run, string, error) {
	p := s.p
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		return nil, "", err
	}
	run := pipeline.NewRun("run", p, plan, s.now())
	run.Schedule = fr.Schedule
	run.Params["fire"] = fr.At.UTC().Format(time.RFC3339)
	if sched.Bump != "" {
		run.Params["bump"] = sched.Bump
	}
	if _, err := checkFreeze(f, p, p.Environments(), false, ""); err != nil {
		var frozen *pipeline.FrozenError
		if errors.As(err, &frozen) {
			return run, fmt.Sprintf("%s is frozen by window %s (%s)", frozen.Environment, frozen.Window.Name, frozen.Window.Span), nil
		}
		return nil, "", err
	}
	var commits map[string]string
	if len(p.Spec.Repos) > 0 {
		if commits, err = repos.New(p.Spec, f.WorkDir()).Heads(ctx); err != nil {
			return nil, "", err
		}
	}
	run.Commits = commits
	if reason, err := s.nothingNew(ctx, commits); err != nil || reason != "" {
		return run, reason, err
	}
	v, err := allocateVersion(ctx, f, p, s.st, run.ID, sched.Bump, "", commits)
	if errors.Is(err, repos.ErrNothingToRelease) {
		return run, fmt.Sprintf("%v: %s", err, v.Reason), nil
	}
	if err != nil {
		return nil, "", err
	}
	if v.Next != nil && v.Next.Previous != "" && len(v.Next.Repos) > 0 {
		quiet := true
		for _, rc := range v.Next.Repos {
			quiet = quiet && rc.Commits == 0
		}
		if quiet {
			return run, "no commit in any repo since " + v.Next.PreviousTag, nil
		}
	}
	run.Version = v.Version
	run.Params["versionReason"] = v.Reason
	return run, "", nil
}

// nothingNew reports why there is nothing to release when every repo is
// at the commit of the newest release run (one that succeeded, or that
// waits at a gate, or still runs): "" when something is new.
func (s *server) nothingNew(ctx context.Context, commits map[string]string) (string, error) {
	if len(commits) == 0 {
		return "", nil
	}
	runs, err := s.st.Runs(ctx, pipeline.RunFilter{})
	if err != nil {
		return "", err
	}
	for _, r := range runs {
		if r.Kind != "run" || r.Version == "" {
			continue
		}
		if r.Status != pipeline.Succeeded && r.Status != pipeline.Waiting && r.Status != pipeline.Running {
			continue
		}
		if maps.Equal(r.Commits, commits) {
			return fmt.Sprintf("no commit in any repo since release %s (run %s)", r.Version, r.ID), nil
		}
		return "", nil
	}
	return "", nil
}

// recordSkipped records a fire that released nothing: a run of no nodes,
// status skipped, with the reason.
func (s *server) recordSkipped(ctx context.Context, fr fire, run *pipeline.Run, reason string) error {
	now := s.now().UTC()
	skipped := &pipeline.Run{
		ID: run.ID, Kind: "run", Pipeline: run.Pipeline, Status: pipeline.Skipped,
		Commits: run.Commits, Params: map[string]string{}, StartedAt: run.StartedAt, FinishedAt: &now,
	}
	maps.Copy(skipped.Params, run.Params)
	skipped.Schedule, skipped.SkipReason = run.Schedule, reason
	if err := s.st.CreateRun(ctx, skipped); err != nil {
		return err
	}
	s.log.Info("scheduled run skipped", "schedule", fr.Schedule, "at", fr.At.UTC(), "run", skipped.ID, "reason", strings.TrimSpace(reason))
	return nil
}
