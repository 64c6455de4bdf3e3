package main

import (
	"context"

	"github.com/sweepboard/release/pipeline/engine"
	"github.com/sweepboard/release/repos"
)

// The read side of the repos for the engine: tags, release notes, logs.

func (g gitRepos) Tagged(ctx context.Context, version string) (map[string]string, error) {
	return repos.New(g.spec, g.workDir).Tagged(ctx, version)
}

func (g gitRepos) Notes(ctx context.Context, version string, commits map[string]string) (engine.RepoNotes, error) {
	set := repos.New(g.spec, g.workDir)
	cls, err := set.Changelogs(ctx, version, commits)
	if err != nil {
		return engine.RepoNotes{}, err
	}
	return engine.RepoNotes{Markdown: repos.Notes(set.TagName(version), cls), Detail: cls}, nil
}

func (g gitRepos) Log(ctx context.Context, repo, from, to string) ([]engine.Commit, error) {
	log, err := repos.New(g.spec, g.workDir).Log(ctx, repo, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Commit, len(log))
	for i, c := range log {
		out[i] = engine.Commit{SHA: c.SHA, Subject: c.Subject}
	}
	return out, nil
}

func (g gitRepos) Resolve(ctx context.Context, repo, ref string) (engine.Ref, error) {
	r, err := repos.New(g.spec, g.workDir).Resolve(ctx, repo, ref)
	return engine.Ref{Repo: r.Repo, Ref: r.Ref, Commit: r.Commit, Branch: r.Branch}, err
}

func (g gitRepos) Base(ctx context.Context, repo, commit string) (string, error) {
	return repos.New(g.spec, g.workDir).Base(ctx, repo, commit)
}

func (g gitRepos) Versions(ctx context.Context) ([]string, error) {
	return repos.New(g.spec, g.workDir).Versions(ctx)
}

func (g gitRepos) Gone(ctx context.Context, repo, ref string) (bool, error) {
	return repos.New(g.spec, g.workDir).Gone(ctx, repo, ref)
}

var (
	_ engine.Repos      = gitRepos{}
	_ engine.Branches   = gitRepos{}
	_ engine.BranchGone = gitRepos{}
)
