package deploy

import "github.com/sweepboard/release/stages"

// This file is what other stage kinds take from the deploy stage, so that
// a job (docker-run) or a command in a running container (docker-exec)
// sees a service exactly as its deployed containers do.

// ContainerEnv is the environment the deploy gives every container of
// service in environment, for the release version (see containerEnv):
// NAME=VALUE, sorted. secrets are the env_from values, read through
// lookup, that whatever shows output must hide. An error names the file
// and line or the variable, never a value.
func ContainerEnv(spec *stages.Spec, environment, service, version string, lookup func(string) (string, bool)) (env, secrets []string, err error) {
	return containerEnv(spec.ServiceIn(environment, service), environment, version, lookup)
}

// PipelineName is what the labels of containers and networks call the
// pipeline: its name, or "release" when it has none.
func PipelineName(spec *stages.Spec) string { return pipelineName(spec) }
