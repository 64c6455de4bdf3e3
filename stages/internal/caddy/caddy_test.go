package caddy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/pipeline/deadline"
)

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
	admin := parts.StartCaddy(t)
	c := New(admin, deadline.Deadlines{})
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
		if err := c.Switch(ctx, Route{ID: id, Listen: st.listen}, st.upstreams); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		ups, err := c.Upstreams(ctx, id)
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

	if err := c.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ups, err := c.Upstreams(ctx, id); err != nil || ups != nil {
		t.Errorf("after remove: upstreams %v, %v; want none", ups, err)
	}
	if err := c.Remove(ctx, id); err != nil {
		t.Errorf("remove of a missing route: %v", err)
	}

	// A listen address Caddy cannot take is an error naming Caddy's reason.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = c.Switch(ctx, Route{ID: id, Listen: busy.Addr().String()}, []string{a})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("switch to a busy address: %v, want address already in use", err)
	}
}
