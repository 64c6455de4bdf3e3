package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
)

// startCaddy runs a Caddy of the test's own, with an empty config but for
// its admin API, and returns the admin URL.
func startCaddy(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	need(t, "caddy binary", err)
	admin := parts.ListenAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(cfg, []byte(`{"admin":{"listen":"`+admin+`","config":{"persist":false}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	url := "http://" + admin
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(url + "/config/")
		if err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy admin on %s: %v", admin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// backend serves its name on a 127.0.0.1 port and returns the address.
func backend(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, name) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestCaddySwitch(t *testing.T) {
	admin := startCaddy(t)
	c := newCaddy(admin)
	ctx := context.Background()
	a, b := backend(t, "a"), backend(t, "b")
	listen1, listen2 := parts.ListenAddr(t), parts.ListenAddr(t)
	const id = "release_p_dev_api"

	get := func(listen string) string {
		t.Helper()
		resp, err := http.Get("http://" + listen + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	steps := []struct {
		name      string
		listen    string
		upstreams []string
		answer    string
	}{
		{"create in an empty config", listen1, []string{a}, "a"},
		{"switch upstreams", listen1, []string{b}, "b"},
		{"same again", listen1, []string{b}, "b"},
		{"move to another address", listen2, []string{a}, "a"},
	}
	for _, st := range steps {
		if err := c.switchTo(ctx, route{ID: id, Listen: st.listen}, st.upstreams); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		ups, err := c.upstreams(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(st.upstreams, ups); diff != "" {
			t.Errorf("%s: upstreams (-want +got):\n%s", st.name, diff)
		}
		if got := get(st.listen); got != st.answer {
			t.Errorf("%s: %s answers %q, want %q", st.name, st.listen, got, st.answer)
		}
	}
	if got := get(listen1); !strings.HasPrefix(got, "error:") {
		t.Errorf("after the move, %s still answers %q", listen1, got)
	}

	if err := c.remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ups, err := c.upstreams(ctx, id); err != nil || ups != nil {
		t.Errorf("after remove: upstreams %v, %v; want none", ups, err)
	}
	if err := c.remove(ctx, id); err != nil {
		t.Errorf("remove of a missing route: %v", err)
	}

	// A listen address Caddy cannot take is an error naming Caddy's reason.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = c.switchTo(ctx, route{ID: id, Listen: busy.Addr().String()}, []string{a})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("switch to a busy address: %v, want address already in use", err)
	}
}

// TestCaddyDoctor: doctor recognises Caddy by its admin API's answers, and
// judges its reloads only when Caddy answered.
func TestCaddyDoctor(t *testing.T) {
	caddyAdmin := startCaddy(t)
	serve := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	poser := serve(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	notJSON := serve(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") })
	configOnly := serve(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/config/" {
			fmt.Fprint(w, `{"admin":{}}`)
			return
		}
		http.NotFound(w, r)
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name       string
		admin      string
		adminErr   string // "" for ok
		reloadsErr string
	}{
		{"caddy", caddyAdmin, "", ""},
		{"a 404 server", poser, poser + " answers but is not Caddy's admin API: 404 Not Found to GET /config/", "Caddy did not answer"},
		{"an answer that is not JSON", notJSON, `answers but is not Caddy's admin API: GET /config/ answers "hello", not JSON`, "Caddy did not answer"},
		{"no reverse_proxy endpoint", configOnly, "answers but is not Caddy's admin API: 404 Not Found to GET /reverse_proxy/upstreams", "Caddy did not answer"},
		{"refused", refused, "no answer: caddy GET /config/: ", "Caddy did not answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.reloadsErr == "" {
				if err := checkMigrateReq(tt.admin); err != nil {
					t.Skipf("this machine: %v", err)
				}
			}
			spec := &stages.Spec{Environments: map[string]stages.Environment{"dev": {Proxy: &stages.Proxy{Caddy: tt.admin}}}}
			checks := (&Stage{}).Doctor(context.Background(), spec)
			var names []string
			got := map[string]error{}
			for _, c := range checks {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				names = append(names, c.Name)
				got[c.Name] = c.Run(ctx)
				cancel()
			}
			wantNames := []string{"caddy admin " + tt.admin, "caddy reloads without resets " + tt.admin}
			if diff := cmp.Diff(wantNames, names); diff != "" {
				t.Fatalf("checks (-want +got):\n%s", diff)
			}
			for name, want := range map[string]string{wantNames[0]: tt.adminErr, wantNames[1]: tt.reloadsErr} {
				err := got[name]
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: %v, want ok", name, err)
				case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
					t.Errorf("%s: %v, want an error with %q", name, err, want)
				}
			}
		})
	}
}
