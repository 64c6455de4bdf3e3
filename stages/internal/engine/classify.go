package engine

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
)

// Classify judges the failures of Docker engines and registries, before
// retry's built-in classifier (network failures, HTTP statuses):
//
//   - a stage error marked permanent is final;
//   - an engine that cannot be reached (client.IsErrConnectionFailed) is
//     worth another attempt: it restarts, or is on its way up;
//   - what the engine relays as text (a jsonmessage.JSONError in a push or
//     pull stream) is judged by its words: a registry's network failure or
//     rate limit is worth another attempt, anything else (unauthorized,
//     denied, manifest unknown) is final;
//   - a registry's answer (go-containerregistry's transport.Error) by its
//     status: 408, 429 and 5xx are worth another attempt, the rest final.
//     A 429 or 503 that asked for a wait is a retry.StatusError by the time
//     it gets here (see the registry package's transport), with the wait.
func Classify(err error) (retry.Verdict, bool) {
	var se *stages.Error
	if errors.As(err, &se) && !se.Retry {
		return retry.Final, true
	}
	if client.IsErrConnectionFailed(err) {
		return retry.Verdict{Retry: true, Reason: "docker engine unreachable"}, true
	}
	var je *jsonmessage.JSONError
	if errors.As(err, &je) {
		return Text(je.Message), true
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return (&retry.StatusError{Status: te.StatusCode, Limited: te.StatusCode == http.StatusTooManyRequests}).Verdict(), true
	}
	return retry.Verdict{}, false
}

// Text judges a failure the engine reported as text only: retry.Text's
// network phrases, and a registry's rate limit or 5xx as the engine words
// them.
func Text(msg string) retry.Verdict {
	if v := retry.Text(msg); v.Retry {
		return v
	}
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "toomanyrequests"), strings.Contains(m, "429 too many requests"):
		// The engine drops the registry's Retry-After: the policy's
		// wait for a limit that names none applies.
		return retry.Verdict{Retry: true, Limited: true, Reason: "rate limited (429)"}
	case strings.Contains(m, "503 service unavailable"), strings.Contains(m, "502 bad gateway"),
		strings.Contains(m, "504 gateway timeout"), strings.Contains(m, "500 internal server error"):
		return retry.Verdict{Retry: true, Reason: "registry error"}
	}
	return retry.Final
}

// Policy is the retry policy of engine and registry calls: retry's
// default waits, with Classify first. Callers adjust their copy (Attempts,
// Backoff, Report).
func Policy() retry.Policy {
	return retry.Policy{SecondaryWait: 30 * time.Second}.With(Classify)
}
