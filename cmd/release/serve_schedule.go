package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/engine"
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

// runScheduled makes the release of a fire through the engine, which
// records it skipped with the reason when there is nothing new to release
// or an environment is frozen.
func (s *server) runScheduled(ctx context.Context, fr fire, sched pipeline.Schedule) {
	log := s.log.With("schedule", fr.Schedule, "at", fr.At.UTC())
	var tracked string
	obs := engine.Observer{
		Started: func(r *pipeline.Run) {
			log.Info("starting scheduled run", "run", r.ID, "version", r.Version)
			if s.track(r.ID) {
				tracked = r.ID
			}
		},
		Notice: func(m string) { log.Info(m) },
	}
	run, err := s.e.Fire(ctx, engine.FireRequest{Schedule: fr.Schedule, At: fr.At, Bump: sched.Bump, Exec: engine.Exec{Parallel: s.parallel, Wait: true}}, obs)
	if tracked != "" {
		s.untrack(tracked)
	}
	switch {
	case run == nil:
		log.Error("scheduled run not started", "err", err)
	case run.Status == pipeline.Skipped:
		log.Info("scheduled run skipped", "run", run.ID, "reason", strings.TrimSpace(run.SkipReason))
	case err != nil:
		log.Info("scheduled run stopped", "run", run.ID, "status", run.Status, "err", err)
	}
}
