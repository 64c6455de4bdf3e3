package main

import (
	"fmt"
	"io"
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

// graphID makes a node id safe for both formats: push[api] → push_api.
func graphID(id string) string {
	return strings.NewReplacer("[", "_", "]", "", "-", "_", ".", "_").Replace(id)
}

func writeMermaid(w io.Writer, plan *pipeline.Plan) {
	fmt.Fprintln(w, "flowchart LR")
	for _, n := range plan.Nodes {
		fmt.Fprintf(w, "  %s[\"%s\"]\n", graphID(n.ID), n.ID)
	}
	for _, n := range plan.Nodes {
		for _, need := range n.Needs {
			fmt.Fprintf(w, "  %s --> %s\n", graphID(need), graphID(n.ID))
		}
	}
}

func writeDot(w io.Writer, name string, plan *pipeline.Plan) {
	fmt.Fprintf(w, "digraph %q {\n  rankdir=LR;\n", name)
	for _, n := range plan.Nodes {
		fmt.Fprintf(w, "  %q;\n", n.ID)
	}
	for _, n := range plan.Nodes {
		for _, need := range n.Needs {
			fmt.Fprintf(w, "  %q -> %q;\n", need, n.ID)
		}
	}
	fmt.Fprintln(w, "}")
}
