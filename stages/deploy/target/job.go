package target

// LabelNode is put, with LabelRunID, on the job containers of the
// docker-run stage: the node of the run that started the job. A job
// container also carries LabelPipeline, LabelEnvironment and LabelService
// (the service whose image and configuration it runs), so that tools and
// people find it, but it is no container of the service: a deploy leaves
// it alone and `release status` does not count it (see IsJob).
const LabelNode = "release.node"

// IsJob says whether a container with these labels is a job (docker-run),
// not one of its service's containers.
func IsJob(labels map[string]string) bool { return labels[LabelNode] != "" }
