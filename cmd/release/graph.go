package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// GraphOptions are the inputs of `release graph`.
type GraphOptions struct {
	f      *Factory
	Format string
}

// NewCmdGraph builds `release graph`.
func NewCmdGraph(f *Factory, runF func(*GraphOptions) error) *cobra.Command {
	opts := &GraphOptions{f: f}
	cmd := &cobra.Command{
		Use:   "graph",
		Short: "Print the pipeline's DAG as Mermaid or Graphviz dot",
		Example: `  release graph > pipeline.mmd
  release graph --format dot | dot -Tsvg > pipeline.svg`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Format != "mermaid" && opts.Format != "dot" {
				return usageErrorf("--format %q: want mermaid or dot", opts.Format)
			}
			if runF != nil {
				return runF(opts)
			}
			p, err := f.Pipeline()
			if err != nil {
				return err
			}
			plan, err := p.Plan(pipeline.Slice{})
			if err != nil {
				return err
			}
			if opts.Format == "dot" {
				writeDot(f.IO.Out, p.Spec.Name, plan)
			} else {
				writeMermaid(f.IO.Out, plan)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Format, "format", "mermaid", "mermaid or dot")
	return cmd
}

// Both formats name nodes n0, n1, … in plan order and carry the real name
// as a quoted label: ids are unique whatever the names (a-b and a_b, a
// stage named end, a Mermaid keyword), and a label is escaped once, for
// its format.

// graphIDs numbers the nodes of plan.
func graphIDs(plan *pipeline.Plan) map[string]string {
	ids := make(map[string]string, len(plan.Nodes))
	for i, n := range plan.Nodes {
		ids[n.ID] = "n" + strconv.Itoa(i)
	}
	return ids
}

// mermaidLabel escapes a label for a Mermaid ["…"] node: Mermaid reads
// #name; and #code; entity codes there, and nothing else is special.
var mermaidLabel = strings.NewReplacer(
	"#", "#35;", `"`, "#quot;", "<", "#lt;", ">", "#gt;", "&", "#amp;", "`", "#96;", "\n", "#10;", "\r", "#13;",
)

func writeMermaid(w io.Writer, plan *pipeline.Plan) {
	ids := graphIDs(plan)
	fmt.Fprintln(w, "flowchart LR")
	for _, n := range plan.Nodes {
		fmt.Fprintf(w, "  %s[\"%s\"]\n", ids[n.ID], mermaidLabel.Replace(n.ID))
	}
	for _, n := range plan.Nodes {
		for _, need := range n.Needs {
			fmt.Fprintf(w, "  %s --> %s\n", ids[need], ids[n.ID])
		}
	}
}

// dotString quotes s as a Graphviz string that shows as s: backslash and
// double quote escaped, & as an entity (Graphviz reads &amp; in every
// string), a newline as \n.
func dotString(s string) string {
	return `"` + dotEscape.Replace(s) + `"`
}

var dotEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "&", "&amp;", "\n", `\n`, "\r", `\n`)

func writeDot(w io.Writer, name string, plan *pipeline.Plan) {
	ids := graphIDs(plan)
	fmt.Fprintf(w, "digraph %s {\n  rankdir=LR;\n", dotString(name))
	for _, n := range plan.Nodes {
		fmt.Fprintf(w, "  %s [label=%s];\n", ids[n.ID], dotString(n.ID))
	}
	for _, n := range plan.Nodes {
		for _, need := range n.Needs {
			fmt.Fprintf(w, "  %s -> %s;\n", ids[need], ids[n.ID])
		}
	}
	fmt.Fprintln(w, "}")
}
