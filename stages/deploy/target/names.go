package target

import "strings"

// Labels put on everything a deploy makes. They are how a later deploy or
// `release status` finds the containers of a pipeline's environment, and
// how tools and people find what `release` made.
const (
	LabelPipeline    = "release.pipeline"
	LabelEnvironment = "release.environment"
	LabelService     = "release.service"
	LabelVersion     = "release.version"
	LabelDigest      = "release.digest"
	LabelRunID       = "release.run"
	// LabelConfig is a hash of everything that makes two containers of a
	// service interchangeable: image digest, env, volumes, port, limits.
	LabelConfig = "release.config"
)

// Sanitize keeps the characters container, service and network names and
// Caddy ids allow.
func Sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return b.String()
}

// PortTaken says, from the engine's error or a swarm task's, that a
// container did not start because the host port the engine picked for it
// is held by a process the engine does not know of: another engine on the
// same host, or any program listening there. The engine picks from the
// same range as the kernel and tries ten ports in a row; a new start moves
// on to the next ones.
func PortTaken(msg string) bool {
	return strings.Contains(msg, "address already in use")
}

// PublishAttempts bounds the starts of a container whose published port
// the engine could not bind.
const PublishAttempts = 5
