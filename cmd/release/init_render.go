package main

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// renderPipeline writes the pipeline file `release init` proposes: every
// block with a comment that says what it is for, and the suggestions a
// user is likely to want as comments.
func renderPipeline(name, githubOwner string, found []*foundRepo) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	w("# The release pipeline of %s, written by `release init`.", name)
	w("#")
	w("# A run builds each service's image once, pushes it to the registry by")
	w("# digest, deploys it to dev, promotes the same digests to staging, tags")
	w("# every repo with the release version and releases to prod once approved.")
	w("#")
	w("#   release validate     check this file; every problem as file:line:col")
	w("#   release plan         what a run would do: version, tags, images, hosts")
	w("#   release run          run it; release promote ENV, release approve RUN")
	w("#")
	w("# Completion and checks in an editor (yaml-language-server): run")
	w("# `release schema > pipeline.schema.json` and put this line first:")
	w("#   # yaml-language-server: $schema=pipeline.schema.json")
	w("name: %s", scalar(name))
	w("")
	w("# Versions are tagged v1.4.0; a run bumps the minor version unless told")
	w("# otherwise (--bump major|minor|patch|auto; auto reads conventional commits:")
	w("# feat is minor, fix is patch, a breaking change is major).")
	w("version: {tag_prefix: v, bump: minor}")
	w("")
	w("# The state store records every run, release and deploy: by default a")
	w("# SQLite file beside this one; postgres://… shares it across a team.")
	w("# state: .release/state.db")
	w("")
	w("# Images are pushed here: a local registry on plain HTTP (insecure). Its")
	w("# credentials come from `docker login` or RELEASE_REGISTRY_USER and")
	w("# RELEASE_REGISTRY_PASSWORD, never from this file.")
	w("registry: {url: 127.0.0.1:5000, insecure: true}")
	w("")
	w("# The notes stage publishes a GitHub release per repo, with its changes.")
	w("# The token is read from the variable named here; it is never written here.")
	if githubOwner != "" {
		w("github: {owner: %s, token_env: GITHUB_TOKEN}", scalar(githubOwner))
	} else {
		w("# No repo has a GitHub remote: set the owner and uncomment this and the")
		w("# notes stage below to publish release notes.")
		w("# github: {owner: OWNER, token_env: GITHUB_TOKEN}")
	}
	w("")

	w("# The Git repositories of the release train. Each release is cut from each")
	w("# repo's branch, and every repo is tagged with the version before prod.")
	w("# An https URL may name token_env: VARIABLE, an ssh one ssh_key: FILE; a")
	w("# path is relative to this file.")
	w("repos:")
	for _, r := range found {
		w("  %s:", scalar(r.Name))
		w("    url: %s", scalar(r.URL))
		if r.branchGuess {
			w("    branch: %s   # a guess: check the repo's default branch", scalar(r.Branch))
		} else {
			w("    branch: %s", scalar(r.Branch))
		}
	}
	w("")

	w("# The containers. Each is built from its repo (context and dockerfile are")
	w("# inside it), pushed as REGISTRY/image, and run in every environment. A")
	w("# deploy moves traffic to a new container only once it is healthy: with")
	w("# health.http, once that path answers 2xx on the port.")
	services := 0
	for _, r := range found {
		if r.Dockerfile != "" {
			services++
		}
	}
	if services == 0 {
		w("services: {}")
	} else {
		w("services:")
	}
	for _, r := range found {
		image := name + "/" + sanitizeName(r.Name)
		if r.Dockerfile == "" {
			if r.clone != "" {
				w("  # %s: no Dockerfile found; if it builds an image, describe it here:", scalar(r.Name))
			} else {
				w("  # %s: not cloned here, so its Dockerfile was not read; if it builds an image:", scalar(r.Name))
			}
			w("  # %s:", scalar(r.Name))
			w("  #   repo: %s", scalar(r.Name))
			w("  #   context: .")
			w("  #   dockerfile: Dockerfile")
			w("  #   image: %s", scalar(image))
			w("  #   port: 8080")
			w("  #   health: {http: /healthz, timeout: 30s}")
			continue
		}
		w("  %s:", scalar(r.Name))
		w("    repo: %s", scalar(r.Name))
		w("    context: .")
		w("    dockerfile: %s", scalar(r.Dockerfile))
		w("    image: %s", scalar(image))
		if r.Port != 0 {
			w("    port: %d   # from the Dockerfile's EXPOSE", r.Port)
		} else {
			w("    # port: 8080   # the Dockerfile EXPOSEs none: the port it listens on")
		}
		w("    # health: {http: /healthz, timeout: 30s}   # the path a deploy probes")
		w("    # depends_on: [OTHER]   # services started before this one")
		w("    # env: {LOG_LEVEL: info}")
	}
	w("")

	w("# Where releases run, in promotion order: dev → staging → prod. A release is")
	w("# built once and deployed to dev; `release promote staging` brings the same")
	w("# digests to staging, `release promote prod` to prod, which waits for")
	w("# `release approve`. hosts are Docker engines (unix:///var/run/docker.sock,")
	w("# tcp://HOST:2376, ssh://USER@HOST); all three use this machine's until you")
	w("# point them elsewhere. A Caddy proxy in front switches traffic without")
	w("# dropping requests:")
	w("#   proxy: {caddy: http://127.0.0.1:2019, listen: {SERVICE: \"127.0.0.1:9101\"}}")
	w("environments:")
	w("  dev:")
	w("    hosts: [unix:///var/run/docker.sock]")
	w("  staging:")
	w("    from: dev")
	w("    hosts: [unix:///var/run/docker.sock]")
	w("  prod:")
	w("    from: staging")
	w("    approval: required")
	w("    hosts: [unix:///var/run/docker.sock]")
	w("")

	w("# The stages, a DAG by needs. for_each: service makes one node per service")
	w("# (push[api] waits only for build[api]); environment: puts a stage in that")
	w("# environment's slice, so `release promote staging` runs the staging stages.")
	w("# Kinds: release schema lists them, with each one's with: settings.")
	w("stages:")
	w("  build:           {uses: docker-build, for_each: service}")
	w("  push:            {uses: docker-push, for_each: service, needs: [build], retry: {attempts: 3, backoff: 2s}}")
	w("  deploy-dev:      {uses: deploy, environment: dev, needs: [push]}")
	w("  promote-staging: {uses: deploy, environment: staging, needs: [deploy-dev]}")
	w("  tag:             {uses: git-tag, environment: prod, needs: [promote-staging]}")
	w("  release-prod:    {uses: deploy, environment: prod, needs: [tag]}")
	if githubOwner != "" {
		w("  notes:           {uses: github-release, environment: prod, needs: [release-prod]}")
	} else {
		w("  # notes:         {uses: github-release, environment: prod, needs: [release-prod]}")
	}
	w("  # A command of your own, e.g. a smoke test of staging (no shell: a list):")
	w("  # smoke:         {uses: exec, environment: staging, needs: [promote-staging], with: {command: [./smoke.sh]}}")
	w("")

	w("# Runs that `release serve` starts on a clock, e.g. a weekly major release:")
	w("# schedules:")
	w("#   weekly-major: {cron: \"0 9 * * MON\", bump: major, time_zone: Europe/Berlin}")
	w("")
	w("# Windows in which an environment takes no promotion:")
	w("# freeze:")
	w("#   weekend: {environments: [prod], weekly: {from: \"Fri 16:00\", to: \"Mon 08:00\"}, time_zone: Europe/Berlin}")
	return []byte(b.String())
}

// scalar is s as a YAML scalar: plain where YAML reads it back as the same
// string, quoted otherwise.
func scalar(s string) string {
	out, err := yaml.Marshal(s)
	text := strings.TrimSuffix(string(out), "\n")
	if err != nil || strings.Contains(text, "\n") || strings.HasPrefix(text, "|") || strings.HasPrefix(text, ">") {
		return strconv.Quote(s)
	}
	return text
}
