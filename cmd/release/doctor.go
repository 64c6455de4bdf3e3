package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// DoctorOptions are the inputs of `release doctor`.
type DoctorOptions struct {
	f *Factory
}

// NewCmdDoctor builds `release doctor`.
func NewCmdDoctor(f *Factory, runF func(*DoctorOptions) error) *cobra.Command {
	opts := &DoctorOptions{f: f}
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that everything the pipeline uses answers: store, engines, registry, remotes, tokens",
		Long: `Check the outside world the pipeline depends on, each with a verdict: the state
store, every Docker host, the registry with the credentials at hand, every git remote
with its token or key (and, for git-tag, whether it would take a tag push: asked
without pushing), the Caddy admin APIs, GitHub with its token. Nothing is
changed. Exits 1 when any check fails; secrets are never printed.`,
		Example: `  release doctor
  release doctor -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return doctorRun(cmd.Context(), opts)
		},
	}
}

type checkView struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func doctorRun(ctx context.Context, opts *DoctorOptions) error {
	f := opts.f
	p, err := f.Pipeline()
	if err != nil {
		return err
	}
	dsn, _ := f.StateDSN()
	st, storeErr := f.StoreIfExists(ctx)
	storeCheck := "state store " + store.Redact(dsn)
	if st == nil && storeErr == nil {
		storeCheck += " (not created yet: the first run creates it)"
	}
	checks := []stages.Check{{Name: storeCheck, Err: storeErr}}
	seen := map[string]bool{}
	for _, name := range sortedKeys(p.Stages) {
		d, ok := p.Stages[name].Impl.(stages.Doctor)
		if !ok || seen[p.Stages[name].Uses] {
			continue
		}
		seen[p.Stages[name].Uses] = true
		checks = append(checks, d.Doctor(ctx, p.Spec)...)
	}
	var views []checkView
	failed := 0
	done := map[string]bool{}
	for _, c := range checks {
		if done[c.Name] {
			continue
		}
		done[c.Name] = true
		v := checkView{Name: c.Name, OK: c.Err == nil}
		if c.Err != nil {
			v.Error = c.Err.Error()
			failed++
		}
		views = append(views, v)
	}
	if f.JSON() {
		if err := writeJSON(f.IO.Out, map[string]any{"checks": views, "failed": failed}); err != nil {
			return err
		}
	} else {
		for _, v := range views {
			if v.OK {
				fmt.Fprintf(f.IO.Out, "ok    %s\n", v.Name)
			} else {
				fmt.Fprintf(f.IO.Out, "FAIL  %s: %s\n", v.Name, v.Error)
			}
		}
	}
	if failed > 0 {
		return silent(fmt.Errorf("%d of %d checks failed", failed, len(views)))
	}
	return nil
}
