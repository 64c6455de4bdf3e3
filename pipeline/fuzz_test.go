package pipeline_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sweepboard/release/pipeline"
)

// FuzzParse feeds the loader arbitrary files. Properties:
//   - it never panics, and a file over MaxFileSize is refused;
//   - an invalid file comes back as pipeline.Errors, each positioned in the
//     file (line and column from 1), with a one-line message, in file order;
//   - the same bytes give the same result (no map-order leaks);
//   - a valid file plans: node IDs are unique and every need is a node of
//     the plan.
func FuzzParse(f *testing.F) {
	if seed, err := os.ReadFile("../pipeline.example.yaml"); err == nil {
		f.Add(seed)
	}
	laughs := "l0: &l0 [a, a, a, a]\nl1: &l1 [*l0, *l0, *l0, *l0]\nl2: &l2 [*l1, *l1, *l1, *l1]\n"
	for _, s := range []string{
		"name: p\nstages: {a: {uses: exec}}\n",
		"name: p\nstages: {a: {uses: exec, needs: [a]}}\n",
		"name: p\nstages: {a: {uses: exec}, b: {uses: exec, needs: [a], retry: {attempts: 3, backoff: 1s}, timeout: 2m}}\n",
		"name: p\nstages: {a: {uses: exec, for_each: service}}\nservices: {api: {repo: r, image: i}}\nrepos: {r: {url: ./r, branch: main}}\n",
		"name: p\nenvironments: {dev: {}, prod: {from: dev, approval: required}}\nstages: {d: {uses: deploy, environment: dev}, p: {uses: deploy, environment: prod, needs: [d]}}\n",
		"name: p\nschedules: {nightly: {cron: '0 3 * * *', bump: patch, time_zone: Europe/Paris}}\nstages: {a: {uses: exec}}\n",
		"name: p\nfreeze: {xmas: {from: '2024-12-20T00:00:00Z', to: '2025-01-02T00:00:00Z'}}\nstages: {a: {uses: exec}}\n",
		"a: &x [*x]\n",
		"name: [\n",
		"name: p\nservices: {api: {repo: x, context: ../..}}\n",
		"name: p\nrepos: {r: {url: u, branch: --upload-pack=touch /tmp/x}}\nstages: {a: {uses: exec}}\n",
		"name: p\nstages: {a: {uses: exec, with: &w {message: hi}}, b: {uses: exec, with: *w}}\n",
		"name: p\nstages: {a: {uses: exec, with: {message: bad}}}\n",
		"name: p\nname: q\nstages: {a: {uses: exec}}\n",
		"name: p\nstages: {a: {uses: exec, <<: {needs: []}}}\n",
		"name: p\n? [a, b]\n: c\nstages: {a: {uses: exec}}\n",
		"name: p\nstages: {a: {uses: exec, retry: {attempts: 99999999999999999999}, timeout: -1s}}\n",
		"name: !!binary aGk=\nstages: ~\n",
		"\ufeffname: p\r\nstages:\r\n  a: {uses: exec}\r\n",
		"name: p\n---\nname: q\n",
		"name: p\nstages:\n\ta: {uses: exec}\n",
		"name: \"$(id)`id`;|\\n--\"\nstages: {a: {uses: exec, needs: ['--force']}}\n",
		"name: p\n" + laughs + "stages: {a: {uses: exec, needs: *l2}}\n",
		"name: p\nstages: " + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "\n",
		"name: p\nstages: {a: {uses: \x00}}\n",
		"",
		"~",
		"- a\n- b\n",
	} {
		f.Add([]byte(s))
	}
	reg := testRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := pipeline.Parse("f.yaml", "/f/f.yaml", data, reg)
		_, again := pipeline.Parse("f.yaml", "/f/f.yaml", data, reg)
		if fmt.Sprint(err) != fmt.Sprint(again) {
			t.Fatalf("two parses differ:\n%v\n---\n%v", err, again)
		}
		if err != nil {
			var errs pipeline.Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %v is not a positioned pipeline.Errors", err)
			}
			for i, e := range errs {
				if e.Pos.File != "f.yaml" || e.Pos.Line < 1 || e.Pos.Col < 1 {
					t.Errorf("error %q has no position in f.yaml: %+v", e.Msg, e.Pos)
				}
				if e.Msg == "" || strings.Contains(e.Msg, "\n") {
					t.Errorf("error message %q is empty or more than one line", e.Msg)
				}
				if i > 0 && (e.Pos.Line < errs[i-1].Pos.Line || e.Pos.Line == errs[i-1].Pos.Line && e.Pos.Col < errs[i-1].Pos.Col) {
					t.Errorf("errors out of file order: %v before %v", errs[i-1].Pos, e.Pos)
				}
			}
			return
		}
		if len(data) > pipeline.MaxFileSize {
			t.Fatalf("a %d-byte file loaded", len(data))
		}
		plan, err := p.Plan(pipeline.Slice{})
		if err != nil {
			// A valid file plans, unless every stage fans out over no
			// services.
			for _, st := range p.Stages {
				if st.ForEach == "" {
					t.Fatalf("valid file does not plan: %v", err)
				}
			}
			return
		}
		var ids []string
		for _, n := range plan.Nodes {
			ids = append(ids, n.ID)
		}
		for _, n := range plan.Nodes {
			for _, need := range n.Needs {
				if !slices.Contains(ids, need) {
					t.Fatalf("node %s needs %s, which is not in the plan %v", n.ID, need, ids)
				}
			}
		}
		slices.Sort(ids)
		if len(slices.Compact(ids)) != len(plan.Nodes) {
			t.Fatalf("plan has duplicate node IDs: %v", ids)
		}
	})
}
