package dockerpush

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/stages"
)

// TestPushSilentRegistry pushes to a registry that accepts connections and
// never answers: the push fails within the pipeline file's timeouts (each
// attempt's probe, over HTTPS and plain HTTP, bounded by them), naming the
// registry, and may be resumed.
func TestPushSilentRegistry(t *testing.T) {
	cli := parts.Docker(t, parts.DockerHost)
	addr := parts.SilentPeer(t)
	imageID := loadRandomImage(t, cli, 1024)
	spec := &stages.Spec{
		Name:     "silenttest",
		Registry: stages.ImageRegistry{URL: addr, Insecure: true},
		Services: map[string]stages.Service{"app": {Image: "silenttest/app"}},
		Timeouts: deadline.Deadlines{Connect: 500 * time.Millisecond, TLS: 500 * time.Millisecond, FirstByte: 500 * time.Millisecond, Idle: 500 * time.Millisecond},
	}
	var log bytes.Buffer
	env := &stages.Env{
		RunID: "silent", RunKind: "run", Version: "1.0.0", Item: "app", Node: "push[app]", Stage: "push",
		Spec: spec, Inputs: map[string]stages.Outputs{"build[app]": {"imageID": imageID}}, Log: &log,
	}
	s := &Stage{Host: parts.DockerHost}
	fast := s.policy()
	fast.Backoff = 100 * time.Millisecond
	s.retry = &fast
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	_, err := s.Run(ctx, env)
	took := time.Since(began)
	t.Logf("push to a silent registry failed after %s: %v\n%s", took.Round(time.Millisecond), err, log.String())
	if err == nil {
		t.Fatal("the push to a silent registry succeeded")
	}
	for _, want := range []string{"registry " + addr + " unreachable", "gave up after 3 attempts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if stages.IsPermanent(err) {
		t.Errorf("error %q is permanent: a resume must be allowed to try again", err)
	}
	// Three attempts of a probe over two schemes of 0.5s each, two short
	// waits: well under 10s, where no bound would have waited forever.
	if took > 10*time.Second {
		t.Errorf("the push took %s with timeouts of 500ms", took)
	}
}
