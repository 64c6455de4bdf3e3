// Package deadline bounds every network operation release makes: the
// connect, the TLS handshake, the wait for the first byte of an answer and
// any silence after it. A peer that accepts and never answers, or answers a
// byte a second, fails its call within these bounds rather than holding a
// run (or `release doctor`) forever.
//
// The bounds come from the pipeline file's `timeouts:` block; the zero
// value of each is its default.
package deadline

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of each bound.
const (
	DefaultConnect   = 10 * time.Second
	DefaultTLS       = 10 * time.Second
	DefaultFirstByte = 30 * time.Second
	DefaultIdle      = 60 * time.Second
)

// Deadlines are the bounds of one network operation.
type Deadlines struct {
	// Connect bounds the TCP connect (and the name lookup before it).
	Connect time.Duration `yaml:"connect"`
	// TLS bounds the TLS handshake.
	TLS time.Duration `yaml:"tls"`
	// FirstByte bounds the wait, once a request is sent, for the whole of
	// the answer's status line and headers.
	FirstByte time.Duration `yaml:"first_byte"`
	// Idle bounds any silence of an open connection while a read or write
	// is waiting: a body that stops arriving, a peer that stops reading.
	Idle time.Duration `yaml:"idle"`
}

// Or returns d with each zero bound taken from def, then the defaults.
func (d Deadlines) Or(def Deadlines) Deadlines {
	return Deadlines{
		Connect:   cmp.Or(d.Connect, def.Connect, DefaultConnect),
		TLS:       cmp.Or(d.TLS, def.TLS, DefaultTLS),
		FirstByte: cmp.Or(d.FirstByte, def.FirstByte, DefaultFirstByte),
		Idle:      cmp.Or(d.Idle, def.Idle, DefaultIdle),
	}
}

// filled is d with the defaults for the zero bounds.
func (d Deadlines) filled() Deadlines { return d.Or(Deadlines{}) }

// Dialer returns a DialContext that connects within Connect and gives the
// connection Idle as the bound on each read and write.
func (d Deadlines) Dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d = d.filled()
	dialer := &net.Dialer{Timeout: d.Connect, KeepAlive: 15 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Idle(c, d.Idle), nil
	}
}

// Transport returns an HTTP transport with every bound: connect, TLS,
// first byte, idle. It keeps connections alive for reuse.
func (d Deadlines) Transport() *http.Transport {
	f := d.filled()
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.Dialer(),
		TLSHandshakeTimeout:   f.TLS,
		ResponseHeaderTimeout: f.FirstByte,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
}

// Client returns an HTTP client over Transport. It follows redirects as
// net/http does and sets no overall timeout: a long download that keeps
// arriving is not cut, a silent one is.
func (d Deadlines) Client() *http.Client {
	return &http.Client{Transport: d.Transport()}
}

// Idle wraps c so that each Read and Write fails when the peer is silent
// for longer than idle. A pooled keep-alive connection waiting for its next
// use is idle too and is closed after idle, which costs one reconnect.
func Idle(c net.Conn, idle time.Duration) net.Conn {
	if idle <= 0 {
		return c
	}
	return &idleConn{Conn: c, idle: idle}
}

type idleConn struct {
	net.Conn
	idle time.Duration
	mu   sync.Mutex
	// read and write are deadlines the user of the connection set; the
	// idle bound never extends past them.
	read, write time.Time
}

func (c *idleConn) bound(fixed *time.Time) time.Time {
	t := time.Now().Add(c.idle)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !fixed.IsZero() && fixed.Before(t) {
		return *fixed
	}
	return t
}

func (c *idleConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(c.bound(&c.read)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(c.bound(&c.write)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.read, c.write = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.read = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.write = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}
