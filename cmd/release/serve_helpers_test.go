package main

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// The server runs its work through the engine; these let tests drive the
// command line's own verbs against a server's pipeline and store.

// subFactory is a Factory for one piece of work the server does (a run, a
// promotion, an approval): the server's pipeline and store, its output
// captured instead of printed, and by as the user.
func (s *server) subFactory(out, errOut io.Writer, by string) *Factory {
	getenv := s.f.Getenv
	if by != "" {
		getenv = func(k string) string {
			if k == "RELEASE_USER" {
				return by
			}
			return s.f.Getenv(k)
		}
	}
	sub := &Factory{
		IO:       &IOStreams{In: strings.NewReader(""), Out: out, ErrOut: errOut},
		Registry: s.f.Registry,
		Getenv:   getenv,
		File:     s.f.File,
		State:    s.f.State,
		Output:   "text",
		NoColor:  true,
	}
	sub.pipeline, sub.store = s.p, s.st
	return sub
}

// firstLineWriter hands over the first line written to it (a run id), then
// discards the rest.
type firstLineWriter struct {
	once  sync.Once
	mu    sync.Mutex
	buf   bytes.Buffer
	first string
	line  chan string
	// onFirst, when set, sees the first line before it is handed over.
	onFirst func(string)
}

func newFirstLineWriter() *firstLineWriter { return &firstLineWriter{line: make(chan string, 1)} }

func (w *firstLineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if i := bytes.IndexByte(w.buf.Bytes(), '\n'); i >= 0 {
		line := strings.TrimSpace(string(w.buf.Bytes()[:i]))
		w.once.Do(func() {
			w.first = line
			if w.onFirst != nil {
				w.onFirst(line)
			}
			w.line <- line
		})
	}
	return len(b), nil
}

func (w *firstLineWriter) got() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first
}
