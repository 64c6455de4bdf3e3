package pipeline_test

import (
	"errors"
	"os"
	"testing"

	"github.com/sweepboard/release/pipeline"
)

// FuzzParse feeds the loader arbitrary files: it must never panic, and an
// invalid file must come back as positioned Errors.
func FuzzParse(f *testing.F) {
	if seed, err := os.ReadFile("../pipeline.example.yaml"); err == nil {
		f.Add(seed)
	}
	for _, s := range []string{
		"name: p\nstages: {a: {uses: exec}}\n",
		"name: p\nstages: {a: {uses: exec, needs: [a]}}\n",
		"a: &x [*x]\n",
		"name: [\n",
		"name: p\nservices: {api: {repo: x, context: ../..}}\n",
	} {
		f.Add([]byte(s))
	}
	reg := testRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := pipeline.Parse("f.yaml", "/f/f.yaml", data, reg)
		if err != nil {
			var errs pipeline.Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %v is not a positioned pipeline.Errors", err)
			}
			return
		}
		if _, err := p.Plan(pipeline.Slice{}); err != nil && len(p.Stages) > 0 {
			// A valid file plans, unless every stage fans out over no
			// services.
			for _, st := range p.Stages {
				if st.ForEach == "" {
					t.Fatalf("valid file does not plan: %v", err)
				}
			}
		}
	})
}
