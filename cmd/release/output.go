package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// writeJSON prints v as indented JSON: the one way commands print JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table prints rows aligned on a terminal and tab-separated when piped,
// so scripts can cut columns.
type table struct {
	w     io.Writer
	tty   bool
	tw    *tabwriter.Writer
	heads []string
}

func newTable(w io.Writer, tty bool, heads ...string) *table {
	t := &table{w: w, tty: tty, heads: heads}
	if tty {
		t.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		t.row(heads...)
	}
	return t
}

func (t *table) row(cells ...string) {
	line := strings.Join(cells, "\t") + "\n"
	if t.tw != nil {
		fmt.Fprint(t.tw, line)
		return
	}
	fmt.Fprint(t.w, line)
}

func (t *table) flush() {
	if t.tw != nil {
		t.tw.Flush()
	}
}

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtDuration(from time.Time, to *time.Time) string {
	if to == nil {
		return "-"
	}
	return to.Sub(from).Round(time.Millisecond).String()
}

func sortStrings(s []string) { slices.Sort(s) }
