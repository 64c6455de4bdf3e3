package pipeline

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestScheduleNext(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name  string
		sched Schedule
		after string
		want  string
	}{
		{"utc by default", Schedule{Cron: "0 9 * * MON"}, "2026-11-25T12:00:00Z", "2026-11-30T09:00:00Z"},
		{"berlin summer", Schedule{Cron: "0 8 * * MON", TimeZone: "Europe/Berlin"}, "2026-10-18T00:00:00Z", "2026-10-19T06:00:00Z"},
		{"berlin after the october change", Schedule{Cron: "0 8 * * MON", TimeZone: "Europe/Berlin"}, "2026-10-19T06:00:00Z", "2026-10-26T07:00:00Z"},
		{"berlin after the march change", Schedule{Cron: "0 8 * * MON", TimeZone: "Europe/Berlin"}, "2027-03-22T07:00:00Z", "2027-03-29T06:00:00Z"},
		{"strictly after", Schedule{Cron: "0 9 * * MON"}, "2026-11-30T09:00:00Z", "2026-12-07T09:00:00Z"},
		{"every counts from the epoch", Schedule{Cron: "@every 10m"}, "2026-11-25T12:03:17Z", "2026-11-25T12:10:00Z"},
		{"every, strictly after", Schedule{Cron: "@every 10m"}, "2026-11-25T12:10:00Z", "2026-11-25T12:20:00Z"},
		{"descriptor", Schedule{Cron: "@daily", TimeZone: "America/New_York"}, "2026-11-25T12:00:00Z", "2026-11-26T05:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.sched.Next(utc(tt.after))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.UTC().Format(time.RFC3339)); diff != "" {
				t.Errorf("Next (-want +got):\n%s", diff)
			}
		})
	}
}

func TestScheduleFires(t *testing.T) {
	s := Schedule{Cron: "0 8 * * MON", TimeZone: "Europe/Berlin"}
	from := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	fires, err := s.Fires(from, from.AddDate(0, 0, 31))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fires {
		got = append(got, f.UTC().Format(time.RFC3339))
	}
	want := []string{"2026-10-05T06:00:00Z", "2026-10-12T06:00:00Z", "2026-10-19T06:00:00Z", "2026-10-26T07:00:00Z"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Fires (-want +got):\n%s", diff)
	}
	if _, err := (Schedule{Cron: "nope"}).Next(from); err == nil {
		t.Error("Next of a bad expression: no error")
	}
}
