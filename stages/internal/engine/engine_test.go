package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
)

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	jsonError := func(msg string) error { return &jsonmessage.JSONError{Message: msg} }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		// An engine that restarts.
		{"engine refused", fmt.Errorf("list containers on h: %w", refused), true},
		{"engine reset", fmt.Errorf("inspect: %w", syscall.ECONNRESET), true},
		{"engine stream cut", fmt.Errorf("pull x on h: read engine stream: %w", io.ErrUnexpectedEOF), true},
		{"joined with a refusal", errors.Join(errors.New("remove: no such container"), fmt.Errorf("list: %w", syscall.ECONNREFUSED)), true},
		{"unhealthy", errors.New("container x not healthy after 5s: GET /healthz: 503"), false},
		{"conflict", errors.New("create container x on h: Conflict"), false},
		{"marked permanent", stages.Permanent(fmt.Errorf("push: %w", refused)), false},
		// What the engine relays of a registry.
		{"registry reset, relayed", fmt.Errorf("push x: %w", jsonError("Patch \"http://127.0.0.1:1/v2/x/blobs/uploads/u\": read tcp: connection reset by peer")), true},
		{"registry EOF, relayed", fmt.Errorf("push x: %w", jsonError("Put \"http://127.0.0.1:1/v2/x/manifests/1\": EOF")), true},
		{"registry rate limit, relayed", jsonError("toomanyrequests: You have reached your pull rate limit"), true},
		{"unauthorized, relayed", fmt.Errorf("push x: %w", jsonError("unauthorized: authentication required")), false},
		{"denied, relayed", fmt.Errorf("push x: %w", jsonError("denied: requested access to the resource is denied")), false},
		{"manifest unknown, relayed", jsonError("manifest unknown"), false},
		// A registry's answer to go-containerregistry.
		{"registry 503", &transport.Error{StatusCode: http.StatusServiceUnavailable}, true},
		{"registry 429", &transport.Error{StatusCode: http.StatusTooManyRequests}, true},
		{"registry 401", &transport.Error{StatusCode: http.StatusUnauthorized}, false},
		{"registry 404", &transport.Error{StatusCode: http.StatusNotFound}, false},
		{"registry refused", fmt.Errorf("look up x: %w", refused), true},
		{"unknown", errors.New("manifest invalid"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Policy().Judge(tc.err); got.Retry != tc.want {
				t.Errorf("Judge(%q) = %+v, want Retry %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestClassifyRetryAfter keeps the wait a registry asked for.
func TestClassifyRetryAfter(t *testing.T) {
	err := fmt.Errorf("look up x: %w", &retry.StatusError{Status: http.StatusTooManyRequests, After: 3 * time.Second, Limited: true})
	got := Policy().Judge(err)
	want := retry.Verdict{Retry: true, After: 3 * time.Second, Limited: true, Reason: "rate limited (429)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdict (-want +got):\n%s", diff)
	}
}

// blackHole is a TCP address that takes no connection: a listener whose
// accept queue is full, so the kernel drops further SYNs, as a firewall
// that drops packets does.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: connects succeed until it is full, then hang.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
		if i == 64 {
			parts.Missing(t, "a black hole (a full accept queue)", errors.New("the kernel never stopped taking connections"))
		}
	}
}

// TestConnectBound pings an engine address that black-holes connections:
// the ping fails within the connect bound, naming the address.
func TestConnectBound(t *testing.T) {
	addr := blackHole(t)
	cli, err := Connect("tcp://"+addr, Bounds(deadline.Deadlines{Connect: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	began := time.Now()
	_, err = cli.Ping(ctx)
	took := time.Since(began)
	t.Logf("ping of a black hole: after %s: %v", took.Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("ping error %v, want one naming %s", err, addr)
	}
	if took > 3*time.Second {
		t.Errorf("ping took %s with a connect bound of 300ms", took)
	}
	if !Policy().Judge(err).Retry {
		t.Errorf("%v is final, want it worth another attempt", err)
	}
}

// TestConnectUnix reaches an engine over a unix socket through the
// bounded dialer: here a fake that answers the ping.
func TestConnectUnix(t *testing.T) {
	sock := t.TempDir() + "/docker.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.45")
		w.Write([]byte("OK"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cli, err := Connect("unix://"+sock, Bounds(deadline.Deadlines{Connect: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ping, err := cli.Ping(context.Background())
	if err != nil || ping.APIVersion != "1.45" {
		t.Errorf("ping over the socket: %+v, %v", ping, err)
	}
}
