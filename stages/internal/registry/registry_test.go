package registry

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
)

const (
	testUser = "release-test"
	testPass = "in-process-s3cret"
)

// protected is go-containerregistry's in-process registry behind basic
// auth, as docker-registry's htpasswd does it. Before each request,
// before (when set) may answer instead.
func protected(t *testing.T, before func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	inner := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if before != nil && before(w, r) {
			return
		}
		if u, p, ok := r.BasicAuth(); !ok || u != testUser || p != testPass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// upload puts a random image at host/repo:tag with the test's credentials.
func upload(t *testing.T, host, repo string) name.Digest {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(host+"/"+repo+":src", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	basic := Credentials{Username: testUser, Password: testPass}.Authenticator()
	if err := remote.Write(tag, img, remote.WithAuth(basic)); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.Context().Digest(d.String())
}

func testClient(host string, env map[string]string) *Client {
	spec := &stages.Spec{Registry: stages.ImageRegistry{URL: host, Insecure: true}}
	c := New(spec, func(k string) string { return env[k] })
	c.Policy.Backoff = 10 * time.Millisecond
	return c
}

// TestClientCredentials reads a protected registry with a credential
// helper's credentials, and fails without any, naming the registry, or with
// the wrong ones, naming their source; no error holds a secret.
func TestClientCredentials(t *testing.T) {
	host := protected(t, nil)
	ref := upload(t, host, "app")
	right := parts.NewCredentialHelper(t, "fixture", map[string]parts.HelperLogin{host: {Username: testUser, Secret: testPass}})
	wrong := parts.NewCredentialHelper(t, "fixture", map[string]parts.HelperLogin{host: {Username: testUser, Secret: "wrong-s3cret-1"}})
	for _, tt := range []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{name: "helper", env: map[string]string{"DOCKER_CONFIG": right.Config, "PATH": right.Dir}},
		{name: "variables", env: map[string]string{EnvUser: testUser, EnvPassword: testPass, "DOCKER_CONFIG": wrong.Config, "PATH": wrong.Dir}},
		{name: "none", env: map[string]string{"DOCKER_CONFIG": t.TempDir()},
			wantErr: "unauthorized: registry " + host + " wants credentials and none were found"},
		{name: "wrong", env: map[string]string{"DOCKER_CONFIG": wrong.Config, "PATH": wrong.Dir},
			wantErr: "unauthorized: registry " + host + " refused the credentials from credential helper docker-credential-fixture"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := testClient(host, tt.env)
			errs := map[string]error{"ping": c.Ping(ctx, host)}
			_, err := remote.Head(ref, c.Options(ctx)...)
			errs["head"] = c.Error(ref.RegistryStr(), err)
			for op, err := range errs {
				if tt.wantErr == "" {
					if err != nil {
						t.Errorf("%s: %v", op, err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("%s: error %v, want one containing %q", op, err, tt.wantErr)
					continue
				}
				t.Logf("%s: %v", op, err)
				for _, s := range []string{testPass, "wrong-s3cret-1"} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("%s: error %q shows a password", op, err)
					}
				}
			}
		})
	}
	if calls := right.Calls(t); len(calls) != 1 || calls[0] != "get "+host {
		t.Errorf("the helper ran %q, want one get of %s per client", calls, host)
	}
}

// TestClientRetryAfter retries a 429 after the wait the registry asked for.
func TestClientRetryAfter(t *testing.T) {
	var armed atomic.Bool
	var limited atomic.Int32
	host := protected(t, func(w http.ResponseWriter, r *http.Request) bool {
		if armed.Load() && strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodHead && limited.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		return false
	})
	ref := upload(t, host, "app")
	armed.Store(true)
	c := testClient(host, map[string]string{EnvUser: testUser, EnvPassword: testPass})
	var waits []retry.Wait
	c.Policy = c.Policy.Reporting(func(w retry.Wait) { waits = append(waits, w) })
	ctx := context.Background()
	opts := c.Options(ctx)
	err := c.Do(ctx, "look up "+ref.String(), func(context.Context) error {
		_, err := remote.Head(ref, opts...)
		return err
	})
	if err != nil {
		t.Fatalf("head after a 429: %v", err)
	}
	if len(waits) != 1 || !waits[0].Asked || waits[0].Wait != time.Second {
		t.Fatalf("waits %+v, want one of 1s as the registry asked", waits)
	}
	t.Logf("waited: %s", waits[0])
}

// TestClientSilentRegistry pings, and looks up a tag in, a registry that
// accepts connections and never answers: each fails within the pipeline's
// timeouts (the plain-HTTP attempt of an insecure registry included),
// naming the registry.
func TestClientSilentRegistry(t *testing.T) {
	host := parts.SilentPeer(t)
	spec := &stages.Spec{
		Registry: stages.ImageRegistry{URL: host, Insecure: true},
		Timeouts: deadline.Deadlines{Connect: 300 * time.Millisecond, TLS: 300 * time.Millisecond, FirstByte: 300 * time.Millisecond, Idle: 300 * time.Millisecond},
	}
	c := New(spec, func(string) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"ping", func() error { return c.Ping(ctx, host) }},
		{"look up", func() error {
			tag, err := name.NewTag(host+"/app:1.0.0", name.Insecure)
			if err != nil {
				return err
			}
			_, err = remote.Get(tag, c.Options(ctx)...)
			return err
		}},
	} {
		began := time.Now()
		err := op.f()
		took := time.Since(began)
		t.Logf("%s: after %s: %v", op.name, took.Round(time.Millisecond), err)
		if err == nil || !strings.Contains(err.Error(), host) {
			t.Errorf("%s: error %v, want one naming %s", op.name, err, host)
		}
		if took > 5*time.Second {
			t.Errorf("%s took %s against timeouts of 300ms", op.name, took)
		}
		if !c.Policy.Judge(err).Retry {
			t.Errorf("%s: %v is final, want it worth another attempt", op.name, err)
		}
	}
}
