package pipeline

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Freeze is a window in which the named environments take no promotion:
// every week between two weekday times (weekly), or once between two
// dates (from, to), in the window's time zone.
type Freeze struct {
	Environments []string `yaml:"environments"`
	Weekly       *Weekly  `yaml:"weekly"`
	From         string   `yaml:"from"` // "2026-12-23 00:00"
	To           string   `yaml:"to"`
	TimeZone     string   `yaml:"time_zone"` // default UTC

	loc      *time.Location
	from, to time.Time // dated windows
}

// Weekly is a window that repeats every week: from "Fri 16:00" to
// "Mon 08:00" wraps over the weekend.
type Weekly struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`

	from, to int // minutes since Sunday 00:00
}

// Window is a freeze window that applies to an environment.
type Window struct {
	Name         string    `json:"name"`
	Environments []string  `json:"environments"`
	Span         string    `json:"span"` // "Fri 16:00 – Mon 08:00 Europe/Berlin"
	Active       bool      `json:"active"`
	Until        time.Time `json:"until,omitzero"` // when Active: the end of this occurrence
}

const dateLayout = "2006-01-02 15:04"

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// parseWeekTime reads "Fri 16:00" into minutes since Sunday 00:00.
func parseWeekTime(s string) (int, error) {
	day, clock, ok := strings.Cut(strings.TrimSpace(s), " ")
	wd, known := weekdays[strings.ToLower(day)]
	if !ok || !known {
		return 0, fmt.Errorf("%q is not a weekday and time like \"Fri 16:00\"", s)
	}
	t, err := time.Parse("15:04", strings.TrimSpace(clock))
	if err != nil {
		return 0, fmt.Errorf("%q is not a weekday and time like \"Fri 16:00\"", s)
	}
	return int(wd)*24*60 + t.Hour()*60 + t.Minute(), nil
}

// compile checks a freeze window and prepares it; the error says what is
// wrong, without the key path.
func (f *Freeze) compile(envs map[string]bool) error {
	if len(f.Environments) == 0 {
		return fmt.Errorf("environments: required")
	}
	for _, e := range f.Environments {
		if !envs[e] {
			return fmt.Errorf("environments: unknown environment %q", e)
		}
	}
	f.loc = time.UTC
	if f.TimeZone != "" {
		loc, err := time.LoadLocation(f.TimeZone)
		if err != nil {
			return fmt.Errorf("time_zone: unknown time zone %q", f.TimeZone)
		}
		f.loc = loc
	}
	switch {
	case f.Weekly != nil && (f.From != "" || f.To != ""):
		return fmt.Errorf("give weekly or from and to, not both")
	case f.Weekly != nil:
		var err error
		if f.Weekly.from, err = parseWeekTime(f.Weekly.From); err != nil {
			return fmt.Errorf("weekly.from: %v", err)
		}
		if f.Weekly.to, err = parseWeekTime(f.Weekly.To); err != nil {
			return fmt.Errorf("weekly.to: %v", err)
		}
		if f.Weekly.from == f.Weekly.to {
			return fmt.Errorf("weekly: from and to are the same time")
		}
	case f.From != "" && f.To != "":
		var err error
		if f.from, err = time.ParseInLocation(dateLayout, f.From, f.loc); err != nil {
			return fmt.Errorf("from: %q is not a date and time like \"2026-12-23 00:00\"", f.From)
		}
		if f.to, err = time.ParseInLocation(dateLayout, f.To, f.loc); err != nil {
			return fmt.Errorf("to: %q is not a date and time like \"2027-01-02 08:00\"", f.To)
		}
		if !f.to.After(f.from) {
			return fmt.Errorf("to is not after from")
		}
	default:
		return fmt.Errorf("give weekly: {from, to} or from and to")
	}
	return nil
}

// activeAt reports whether the window covers t, and when this occurrence
// ends.
func (f *Freeze) activeAt(t time.Time) (bool, time.Time) {
	if f.Weekly == nil {
		return !t.Before(f.from) && t.Before(f.to), f.to
	}
	local := t.In(f.loc)
	sunday := time.Date(local.Year(), local.Month(), local.Day()-int(local.Weekday()), 0, 0, 0, 0, f.loc)
	minute := int(local.Weekday())*24*60 + local.Hour()*60 + local.Minute()
	from, to := f.Weekly.from, f.Weekly.to
	at := func(week time.Time, m int) time.Time {
		return time.Date(week.Year(), week.Month(), week.Day(), 0, m, 0, 0, f.loc)
	}
	switch {
	case from < to && minute >= from && minute < to:
		return true, at(sunday, to)
	case from > to && minute >= from: // wraps: ends next week
		return true, at(sunday.AddDate(0, 0, 7), to)
	case from > to && minute < to:
		return true, at(sunday, to)
	}
	return false, time.Time{}
}

func (f *Freeze) span() string {
	tz := f.loc.String()
	if f.Weekly != nil {
		return fmt.Sprintf("%s – %s %s", f.Weekly.From, f.Weekly.To, tz)
	}
	return fmt.Sprintf("%s – %s %s", f.From, f.To, tz)
}

// Windows returns the freeze windows of an environment (all environments
// when env is ""), by name, each marked active when it covers t.
func (p *Pipeline) Windows(env string, t time.Time) []Window {
	var out []Window
	for _, name := range sortedKeys(p.Freeze) {
		f := p.Freeze[name]
		if env != "" && !slices.Contains(f.Environments, env) {
			continue
		}
		active, until := f.activeAt(t)
		w := Window{Name: name, Environments: f.Environments, Span: f.span(), Active: active}
		if active {
			w.Until = until
		}
		out = append(out, w)
	}
	return out
}

// FrozenError refuses a promotion into a frozen environment.
type FrozenError struct {
	Environment string
	Window      Window
}

func (e *FrozenError) Error() string {
	return fmt.Sprintf("%s is frozen by window %s (%s) until %s; --force --reason TEXT to go anyway",
		e.Environment, e.Window.Name, e.Window.Span, e.Window.Until.Format("2006-01-02 15:04 MST"))
}

// CheckFrozen returns a *FrozenError when a window covers env at t.
func (p *Pipeline) CheckFrozen(env string, t time.Time) error {
	for _, w := range p.Windows(env, t) {
		if w.Active {
			return &FrozenError{Environment: env, Window: w}
		}
	}
	return nil
}
