package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages/builtin"
)

// awkwardNames are stage and service names that collided or broke the
// output when ids were the names with punctuation replaced: a-b and a_b,
// a Mermaid keyword, quotes, brackets, markup and a backslash.
const awkwardNames = `
name: 'say "hi"'
repos: {r: {url: ./r}}
services:
  api.v2: {repo: r, image: x/api}
  web: {repo: r, image: x/web}
stages:
  a-b: {uses: exec, for_each: service, with: {command: [echo]}}
  a_b: {uses: exec, for_each: service, needs: [a-b], with: {command: [echo]}}
  end: {uses: exec, needs: [a_b], with: {command: [echo]}}
  'say "hi" #1': {uses: exec, needs: [end], with: {command: [echo]}}
  '<b>&amp;</b>': {uses: exec, needs: [end], with: {command: [echo]}}
  'back\slash': {uses: exec, needs: ['say "hi" #1', '<b>&amp;</b>'], with: {command: [echo]}}
`

func TestGraphIDsAreUniqueAndLabelsEscaped(t *testing.T) {
	p, err := pipeline.Parse("pipeline.yaml", "/p/pipeline.yaml", []byte(awkwardNames), builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	plan, err := p.Plan(pipeline.Slice{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for name, id := range graphIDs(plan) {
		if other, ok := ids[id]; ok {
			t.Errorf("%s and %s have the same id %s", other, name, id)
		}
		ids[id] = name
	}
	for _, tt := range []struct {
		golden string
		write  func(*bytes.Buffer)
	}{
		{"awkward.mmd", func(b *bytes.Buffer) { writeMermaid(b, plan) }},
		{"awkward.dot", func(b *bytes.Buffer) { writeDot(b, p.Spec.Name, plan) }},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			var got bytes.Buffer
			tt.write(&got)
			checkGolden(t, filepath.Join("testdata", "graph", tt.golden), got.Bytes())
		})
	}
}

// checkGolden compares got with the golden file, or rewrites it with
// -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}
