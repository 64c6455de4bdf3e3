package repos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
)

func TestClassifyGit(t *testing.T) {
	answer := func(status int, header ...string) error {
		h := http.Header{}
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
		req, _ := http.NewRequest(http.MethodGet, "http://git.example/api.git/info/refs", nil)
		return plumbing.NewUnexpectedError(&githttp.Err{Response: &http.Response{StatusCode: status, Header: h, Request: req}})
	}
	tests := []struct {
		name  string
		err   error
		want  retry.Verdict
		known bool
	}{
		{"502 inside go-git's UnexpectedError", fmt.Errorf("list: %w", answer(http.StatusBadGateway)), retry.Verdict{Retry: true, Reason: "502"}, true},
		{"429 with Retry-After", answer(http.StatusTooManyRequests, "Retry-After", "3"),
			retry.Verdict{Retry: true, After: 3 * time.Second, Limited: true, Reason: "rate limited (429)"}, true},
		{"400", answer(http.StatusBadRequest), retry.Final, true},
		{"a reset inside UnexpectedError", plumbing.NewUnexpectedError(&net.OpError{Op: "read", Err: syscall.ECONNRESET}),
			retry.Verdict{Retry: true, Reason: "connection reset"}, true},
		{"401 is go-git's sentinel, left to the built-in classifier", fmt.Errorf("%w: nope", transport.ErrAuthenticationRequired), retry.Verdict{}, false},
		{"a plain error", errors.New("boom"), retry.Verdict{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, known := classifyGit(tt.err)
			if known != tt.known {
				t.Fatalf("known = %v, want %v", known, tt.known)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
	// Through the policy, go-git's sentinels stay final.
	p := retry.Policy{}.With(classifyGit)
	if v := p.Judge(fmt.Errorf("%w: nope", transport.ErrAuthorizationFailed)); v.Retry {
		t.Errorf("403 judged %+v, want final", v)
	}
}

// silentPeer accepts connections and, with trickle, sends one byte a
// second of an HTTP answer that never ends its headers; without it,
// nothing at all.
func silentPeer(t *testing.T, trickle bool) string {
	if trickle {
		return parts.TricklePeer(t, time.Second)
	}
	return parts.SilentPeer(t)
}

// TestGitDeadlines: an HTTP remote that accepts and never answers, or
// answers a byte a second, fails Reach and the push probe within the
// pipeline's first-byte bound, not never.
func TestGitDeadlines(t *testing.T) {
	for _, tt := range []struct {
		name    string
		trickle bool
	}{{"never answers", false}, {"a byte a second", true}} {
		t.Run(tt.name, func(t *testing.T) {
			addr := silentPeer(t, tt.trickle)
			spec := &stages.Spec{
				Repos:    map[string]stages.Repo{"api": {URL: "http://" + addr + "/api.git"}},
				Timeouts: deadline.Deadlines{FirstByte: 500 * time.Millisecond, Idle: 500 * time.Millisecond},
			}
			set := New(spec, t.TempDir())
			set.gitBackoff = 10 * time.Millisecond
			for _, call := range []struct {
				what string
				f    func(context.Context) error
			}{
				{"reach", func(ctx context.Context) error { return set.Reach(ctx, "api") }},
				{"push probe", func(ctx context.Context) error { return set.PushAllowed(ctx, "api") }},
				{"fetch", func(ctx context.Context) error { _, err := set.Open(ctx, "api"); return err }},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				start := time.Now()
				err := call.f(ctx)
				took := time.Since(start)
				cancel()
				t.Logf("%s: %v in %v", call.what, err, took.Round(time.Millisecond))
				if err == nil || !strings.Contains(err.Error(), addr) {
					t.Errorf("%s: err = %v, want one naming %s", call.what, err, addr)
				}
				// Three attempts of 0.5s each and their backoffs.
				if took > 5*time.Second {
					t.Errorf("%s took %v, want it bounded by the 0.5s first-byte bound", call.what, took)
				}
			}
		})
	}
}
