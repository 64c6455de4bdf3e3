package deadline

import (
	"io"
	"net"
	"testing"
	"time"
)

// listen starts a TCP peer that runs serve on every connection.
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String()
}

func TestBrokenPeersFailWithinTheirBound(t *testing.T) {
	d := Deadlines{Connect: 300 * time.Millisecond, TLS: 300 * time.Millisecond, FirstByte: 300 * time.Millisecond, Idle: 300 * time.Millisecond}
	silent := listen(t, func(c net.Conn) { time.Sleep(5 * time.Second) })
	trickle := listen(t, func(c net.Conn) {
		for _, b := range []byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	stalls := listen(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
		time.Sleep(5 * time.Second)
	})
	for _, tc := range []struct{ name, url string }{
		{"accepts and never answers", "http://" + silent + "/"},
		{"a byte at a time", "http://" + trickle + "/"},
		{"TLS to a silent peer", "https://" + silent + "/"},
		{"body stops", "http://" + stalls + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := d.Client().Get(tc.url)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("took %s: %v", took, err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	got := Deadlines{FirstByte: time.Second}.Or(Deadlines{Idle: 2 * time.Second})
	want := Deadlines{Connect: DefaultConnect, TLS: DefaultTLS, FirstByte: time.Second, Idle: 2 * time.Second}
	if got != want {
		t.Fatalf("Or = %+v, want %+v", got, want)
	}
}
