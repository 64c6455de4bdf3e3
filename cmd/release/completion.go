package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline"
)

// Shell completion (cobra's `release completion bash|zsh|fish|powershell`)
// knows the pipeline and the store: environments, run ids newest first,
// the stages of a run, and every flag whose values are a fixed list.
//
// Completing never creates anything and never prints an error: the store
// is opened only when it exists (Factory.StoreIfExists), a pipeline file
// that does not load or a store that does not answer gives no candidates,
// and the whole look-up has a deadline.

// completionTimeout bounds one completion: a shell waits for it.
const completionTimeout = 2 * time.Second

// Run statuses a command can act on, for its run id candidates.
var (
	resumable   = []pipeline.Status{pipeline.Pending, pipeline.Running, pipeline.Waiting, pipeline.Failed, pipeline.Interrupted, pipeline.Fenced}
	waitingOnly = []pipeline.Status{pipeline.Waiting}
)

// addCompletions wires completion into the command tree: positional
// arguments by command, flag values by flag name wherever the flag is.
// A command or flag that has its own completion keeps it.
func addCompletions(root *cobra.Command, f *Factory) {
	c := completer{f: f}
	args := map[string]cobra.CompletionFunc{
		"release promote":   c.first(c.environments),
		"release rollback":  c.first(c.environments),
		"release status":    c.first(c.environments),
		"release history":   c.first(c.environments),
		"release resume":    c.first(c.runs(resumable)),
		"release cancel":    c.first(c.runs(resumable)),
		"release approve":   c.runThen(waitingOnly, c.waitingNodes),
		"release logs":      c.runThen(nil, c.runNodes),
		"release runs show": c.first(c.runs(nil)),
	}
	fixed := func(values ...string) cobra.CompletionFunc {
		return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveKeepOrder)
	}
	statuses := make([]string, len(pipeline.Statuses))
	for i, s := range pipeline.Statuses {
		statuses[i] = string(s)
	}
	// Flags by name, the same wherever they are; a command-specific list
	// (graph's --format) by command and name.
	flags := map[string]cobra.CompletionFunc{
		"bump":   fixed(pipeline.Bumps...),
		"env":    c.environments,
		"status": c.list(statuses),
	}
	commandFlags := map[string]map[string]cobra.CompletionFunc{
		"release graph": {"format": fixed("mermaid", "dot")},
	}
	_ = root.RegisterFlagCompletionFunc("output", fixed("text", "json"))

	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		if fn := args[cmd.CommandPath()]; fn != nil && cmd.ValidArgsFunction == nil {
			cmd.ValidArgsFunction = fn
		}
		for name, fn := range commandFlags[cmd.CommandPath()] {
			registerFlag(cmd, name, fn)
		}
		for name, fn := range flags {
			registerFlag(cmd, name, fn)
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// registerFlag gives cmd's own flag name (not an inherited one) its
// completion, unless it has one already.
func registerFlag(cmd *cobra.Command, name string, fn cobra.CompletionFunc) {
	if cmd.LocalNonPersistentFlags().Lookup(name) == nil && cmd.PersistentFlags().Lookup(name) == nil {
		return
	}
	if _, ok := cmd.GetFlagCompletionFunc(name); ok {
		return
	}
	_ = cmd.RegisterFlagCompletionFunc(name, fn)
}

// completer answers completions from the factory's pipeline and store.
type completer struct{ f *Factory }

const noFiles = cobra.ShellCompDirectiveNoFileComp

// first completes the first argument with fn, and nothing after it.
func (c completer) first(fn cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, noFiles
		}
		return fn(cmd, args, toComplete)
	}
}

// runThen completes a run id first (in one of statuses, or any), then the
// second argument with next, and nothing after it.
func (c completer) runThen(statuses []pipeline.Status, next cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return c.runs(statuses)(cmd, args, toComplete)
		case 1:
			return next(cmd, args, toComplete)
		}
		return nil, noFiles
	}
}

// list completes from values; a flag that takes a comma-separated list
// (--status failed,waiting) is completed after its last comma.
func (c completer) list(values []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		done, _ := cutLast(toComplete, ",")
		var out []cobra.Completion
		for _, v := range values {
			out = append(out, done+v)
		}
		return out, noFiles | cobra.ShellCompDirectiveKeepOrder
	}
}

func cutLast(s, sep string) (before, after string) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", s
	}
	return s[:i+1], s[i+1:]
}

// environments are the pipeline file's environments, sorted; a template
// (dev-*) is not one to type.
func (c completer) environments(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	p, err := c.f.Pipeline()
	if err != nil {
		return nil, noFiles
	}
	var out []cobra.Completion
	for name, env := range p.Spec.Environments {
		if strings.Contains(name, "*") {
			continue
		}
		desc := "environment"
		if env.From != "" {
			desc += ", promoted from " + env.From
		}
		out = append(out, cobra.CompletionWithDesc(name, desc))
	}
	slices.Sort(out)
	return out, noFiles
}

// runs are the ids of the runs in one of statuses (any, when nil), newest
// first, each described by kind, version and status.
func (c completer) runs(statuses []pipeline.Status) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := c.context(cmd)
		defer cancel()
		st, err := c.f.StoreIfExists(ctx)
		if err != nil || st == nil {
			return nil, noFiles
		}
		runs, err := st.Runs(ctx, pipeline.RunFilter{Status: statuses, Limit: 200})
		if err != nil {
			return nil, noFiles
		}
		var out []cobra.Completion
		for _, r := range runs {
			if !strings.HasPrefix(r.ID, toComplete) {
				continue
			}
			desc := r.Kind
			if r.Environment != "" {
				desc += " " + r.Environment
			}
			if r.Version != "" {
				desc += " " + r.Version
			}
			out = append(out, cobra.CompletionWithDesc(r.ID, desc+", "+string(r.Status)))
		}
		return out, noFiles | cobra.ShellCompDirectiveKeepOrder
	}
}

// waitingNodes are the nodes of run args[0] that wait for an approval, or,
// when it has none (or cannot be read), the pipeline's approval stages.
func (c completer) waitingNodes(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var out []cobra.Completion
	if run := c.run(cmd, args[0]); run != nil {
		for _, n := range run.Nodes {
			if n.Status == pipeline.Waiting {
				out = append(out, cobra.CompletionWithDesc(n.ID, "waiting for approval"))
			}
		}
	}
	if len(out) > 0 {
		return out, noFiles | cobra.ShellCompDirectiveKeepOrder
	}
	return c.stages(func(st *pipeline.Stage) bool { return st.Uses == "approval" }), noFiles
}

// runNodes are the stages and nodes of run args[0], in run order (a
// fanned-out stage by its name, then its nodes), or the pipeline's stages
// when the run cannot be read.
func (c completer) runNodes(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	run := c.run(cmd, args[0])
	if run == nil {
		return c.stages(nil), noFiles
	}
	var out []cobra.Completion
	seen := map[string]bool{}
	for _, n := range run.Nodes {
		if !seen[n.Stage] {
			seen[n.Stage] = true
			out = append(out, cobra.CompletionWithDesc(n.Stage, "stage"))
		}
		if n.ID != n.Stage && !seen[n.ID] {
			seen[n.ID] = true
			out = append(out, cobra.CompletionWithDesc(n.ID, string(n.Status)))
		}
	}
	return out, noFiles | cobra.ShellCompDirectiveKeepOrder
}

// run reads a run by id or prefix from a store that exists, or is nil.
func (c completer) run(cmd *cobra.Command, id string) *pipeline.Run {
	ctx, cancel := c.context(cmd)
	defer cancel()
	st, err := c.f.StoreIfExists(ctx)
	if err != nil || st == nil {
		return nil
	}
	run, err := st.Run(ctx, id)
	if err != nil {
		return nil
	}
	return run
}

// stages are the pipeline's stage names that keep is true of (all, when
// keep is nil), sorted.
func (c completer) stages(keep func(*pipeline.Stage) bool) []cobra.Completion {
	p, err := c.f.Pipeline()
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for name, st := range p.Stages {
		if keep == nil || keep(st) {
			out = append(out, cobra.CompletionWithDesc(name, fmt.Sprintf("stage (%s)", st.Uses)))
		}
	}
	slices.Sort(out)
	return out
}

func (c completer) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, completionTimeout)
}
