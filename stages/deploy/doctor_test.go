package deploy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/caddy"
)

// TestCaddyDoctor: doctor recognises Caddy by its admin API's answers, and
// judges its reloads only when Caddy answered.
func TestCaddyDoctor(t *testing.T) {
	caddyAdmin := parts.StartCaddy(t)
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
				if err := caddy.CheckMigrateReq(tt.admin); err != nil {
					parts.Missing(t, "net.ipv4.tcp_migrate_req=1 (fixtures/up.sh sets it)", err)
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
