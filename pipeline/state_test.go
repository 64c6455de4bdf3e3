package pipeline_test

import (
	"path/filepath"
	"testing"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// TestStateForms: the file's state is a path beside the file, an absolute
// path, or a PostgreSQL URL or key=value string, which is left as written
// for the store to read (never joined onto the file's directory).
func TestStateForms(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ state, want string }{
		{"", filepath.Join(dir, ".release", "state.db")},
		{"state/x.db", filepath.Join(dir, "state", "x.db")},
		{"/var/lib/release/state.db", "/var/lib/release/state.db"},
		{"postgres://u@db/release", "postgres://u@db/release"},
		{"host=db.internal dbname=release sslmode=require", "host=db.internal dbname=release sslmode=require"},
	} {
		src := "name: p\nstages:\n  one: {uses: noop}\n"
		if c.state != "" {
			src = "state: '" + c.state + "'\n" + src
		}
		reg := &stages.Registry{}
		reg.Register(stages.Kind{Name: "noop", New: func() stages.Stage { return nil }})
		p, err := pipeline.Parse("pipeline.yaml", filepath.Join(dir, "pipeline.yaml"), []byte(src), reg)
		if err != nil {
			t.Fatalf("state %q: %v", c.state, err)
		}
		if p.State != c.want {
			t.Errorf("state %q: got %q, want %q", c.state, p.State, c.want)
		}
	}
}
