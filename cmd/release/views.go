package main

import (
	"strings"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages"
)

// runView is the documented JSON shape of a run (`runs show -o json`, and
// the output of run, resume, promote with -o json).
type runView struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"`
	Status      string            `json:"status"`
	Version     string            `json:"version"`
	Environment string            `json:"environment,omitempty"`
	StartedAt   time.Time         `json:"startedAt"`
	FinishedAt  *time.Time        `json:"finishedAt"`
	Commits     map[string]string `json:"commits"`
	Images      map[string]string `json:"images"`
	// Refs are the --ref values a hotfix run or a branch deployment was
	// started with, by repo; absent for a run of the file's branches.
	Refs     map[string]string `json:"refs,omitempty"`
	Override *overrideView     `json:"override,omitempty"`
	Stages   []nodeView        `json:"stages"`
}

// overrideView records a freeze window a run went through with --force.
type overrideView struct {
	Windows string    `json:"windows"`
	By      string    `json:"by"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

type nodeView struct {
	ID       string           `json:"id"`
	Stage    string           `json:"stage"`
	Item     string           `json:"item"`
	Status   string           `json:"status"`
	Attempts int              `json:"attempts"`
	Outputs  stages.Outputs   `json:"outputs"`
	Error    string           `json:"error"`
	Approval *stages.Approval `json:"approval,omitempty"`
	// StartedAt and FinishedAt are the node's last attempt, null until it
	// starts and finishes; DurationMs is the time between, in whole
	// milliseconds, null until it finished.
	StartedAt  *time.Time `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt"`
	DurationMs *int64     `json:"durationMs"`
}

func newRunView(r *pipeline.Run) runView {
	v := runView{
		ID: r.ID, Kind: r.Kind, Status: string(r.Status), Version: r.Version, Environment: r.Environment,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		Commits: orEmpty(r.Commits), Images: orEmpty(r.Images), Refs: r.Refs, Stages: []nodeView{},
	}
	if o := r.Override; o != nil {
		v.Override = &overrideView{Windows: strings.Join(o.Windows, ","), By: o.By, Reason: o.Reason, At: o.At}
	}
	for _, n := range r.Nodes {
		v.Stages = append(v.Stages, nodeView{
			ID: n.ID, Stage: n.Stage, Item: n.Item, Status: string(n.Status), Attempts: n.Attempts,
			Outputs: stages.Outputs(orEmpty(n.Outputs)), Error: n.Error, Approval: n.Approval,
			StartedAt: n.StartedAt, FinishedAt: n.FinishedAt, DurationMs: durationMs(n.StartedAt, n.FinishedAt),
		})
	}
	return v
}

// durationMs is the milliseconds from start to finish, or nil when either
// is not known.
func durationMs(start, finish *time.Time) *int64 {
	if start == nil || finish == nil {
		return nil
	}
	ms := finish.Sub(*start).Milliseconds()
	return &ms
}

// runSummary is one run in `runs list -o json`.
type runSummary struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	Status      string     `json:"status"`
	Version     string     `json:"version"`
	Environment string     `json:"environment,omitempty"`
	StartedAt   time.Time  `json:"startedAt"`
	FinishedAt  *time.Time `json:"finishedAt"`
}

func orEmpty[M ~map[string]string](m M) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	return keys
}
