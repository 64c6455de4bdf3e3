package pipeline_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
)

const freezeFile = `
name: p
environments: {staging: {}, prod: {from: staging}}
stages:
  a: {uses: exec}
freeze:
  weekend: {environments: [prod], weekly: {from: "Fri 16:00", to: "Mon 08:00"}, time_zone: Europe/Berlin}
  midweek: {environments: [staging], weekly: {from: "Wed 12:00", to: "Wed 13:00"}}
  holidays: {environments: [prod, staging], from: "2026-12-23 00:00", to: "2027-01-02 08:00", time_zone: Europe/Berlin}
`

func TestFreezeWindows(t *testing.T) {
	p, err := parse(freezeFile)
	if err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		env, at, window, until string
	}{
		{"prod", "2026-11-27 15:59", "", ""},                           // Friday, just before
		{"prod", "2026-11-27 16:00", "weekend", "2026-11-30 08:00"},    // Friday 16:00
		{"prod", "2026-11-29 23:00", "weekend", "2026-11-30 08:00"},    // Sunday night
		{"prod", "2026-11-30 08:00", "", ""},                           // Monday 08:00: open
		{"staging", "2026-11-28 12:00", "", ""},                        // the weekend window is prod's
		{"staging", "2026-11-25 14:30", "", ""},                        // 13:30 UTC: after the UTC window
		{"staging", "2026-11-25 13:30", "midweek", "2026-11-25 14:00"}, // 12:30 UTC
		{"prod", "2026-12-24 10:00", "holidays", "2027-01-02 08:00"},   // dated
		{"prod", "2026-10-23 17:00", "weekend", "2026-10-26 08:00"},    // across the end of summer time
	}
	for _, tt := range tests {
		t.Run(tt.env+" "+tt.at, func(t *testing.T) {
			err := p.CheckFrozen(tt.env, at(tt.at))
			var fe *pipeline.FrozenError
			switch {
			case tt.window == "" && err != nil:
				t.Fatalf("frozen: %v", err)
			case tt.window == "":
				return
			case !errors.As(err, &fe):
				t.Fatalf("not frozen at %s, want window %s", tt.at, tt.window)
			}
			got := []string{fe.Window.Name, fe.Window.Until.In(berlin).Format("2006-01-02 15:04")}
			if diff := cmp.Diff([]string{tt.window, tt.until}, got); diff != "" {
				t.Errorf("window (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFreezeErrors(t *testing.T) {
	_, err := parse(`
name: p
environments: {prod: {}}
stages:
  a: {uses: exec}
freeze:
  a: {environments: [prd], weekly: {from: "Fri 16:00", to: "Mon 08:00"}}
  b: {environments: [prod], weekly: {from: "Friday 4pm", to: "Mon 08:00"}}
  c: {environments: [prod], from: "2026-12-23", to: "2027-01-02 08:00"}
  d: {environments: [prod]}
`)
	want := []string{
		`pipeline.yaml:6:3: freeze.a: environments: unknown environment "prd"`,
		`pipeline.yaml:7:3: freeze.b: weekly.from: "Friday 4pm" is not a weekday and time like "Fri 16:00"`,
		`pipeline.yaml:8:3: freeze.c: from: "2026-12-23" is not a date and time like "2026-12-23 00:00"`,
		`pipeline.yaml:9:3: freeze.d: give weekly: {from, to} or from and to`,
	}
	if diff := cmp.Diff(want, errorLines(t, err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}
