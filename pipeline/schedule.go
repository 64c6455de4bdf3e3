package pipeline

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser reads the five-field expressions of `schedules:` and the
// @weekly style descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func checkCron(expr string) error {
	_, err := cronParser.Parse(expr)
	return err
}

// Location is the schedule's time zone: time_zone, or UTC.
func (s Schedule) Location() (*time.Location, error) {
	if s.TimeZone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(s.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("schedule time zone %q: %w", s.TimeZone, err)
	}
	return loc, nil
}

// Next is the first fire of the schedule strictly after t, read on the wall
// clock of its time zone: "0 8 * * MON" in Europe/Berlin is 06:00 UTC in
// summer and 07:00 UTC in winter. It is a pure function of t, so a caller
// with its own clock can walk the fires.
func (s Schedule) Next(t time.Time) (time.Time, error) {
	sched, err := cronParser.Parse(s.Cron)
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule %q: %w", s.Cron, err)
	}
	loc, err := s.Location()
	if err != nil {
		return time.Time{}, err
	}
	if every, ok := sched.(cron.ConstantDelaySchedule); ok {
		// "@every 1h" counts from the epoch, not from t: two servers that
		// started at other times fire at the same instants, so a fire is
		// one fire for both.
		return t.Truncate(every.Delay).Add(every.Delay).In(loc), nil
	}
	return sched.Next(t.In(loc)), nil
}

// Fires returns the fires of the schedule in (from, to], oldest first.
func (s Schedule) Fires(from, to time.Time) ([]time.Time, error) {
	var out []time.Time
	t := from
	for {
		next, err := s.Next(t)
		if err != nil {
			return nil, err
		}
		if next.IsZero() || next.After(to) {
			return out, nil
		}
		out = append(out, next)
		t = next
	}
}
