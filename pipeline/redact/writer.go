package redact

import (
	"bytes"
	"io"
	"sync"
)

// Writer returns a writer that hides secrets in what passes through it to
// w, line by line, so a secret split across two writes is still caught.
// Close writes a last line that has no newline. With no secret it is w.
func Writer(w io.Writer, secrets ...string) io.WriteCloser {
	var keep []string
	for _, s := range secrets {
		if s != "" {
			keep = append(keep, s)
		}
	}
	if len(keep) == 0 {
		return nopCloser{w}
	}
	return &writer{w: w, secrets: keep}
}

type writer struct {
	mu      sync.Mutex
	w       io.Writer
	secrets []string
	buf     []byte
}

// maxLine bounds what is held back waiting for a newline.
const maxLine = 64 << 10

func (r *writer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	// The complete lines go out in one write, as they came: each write
	// to w may be a store write, and one per line would multiply its
	// wait when the store does not answer.
	if i := bytes.LastIndexByte(r.buf, '\n'); i >= 0 {
		var out []byte
		for _, line := range bytes.SplitAfter(r.buf[:i+1], []byte("\n")) {
			out = append(out, String(string(line), r.secrets...)...)
		}
		r.buf = r.buf[i+1:]
		if _, err := r.w.Write(out); err != nil {
			return len(p), err
		}
	}
	if len(r.buf) > maxLine {
		if err := r.emit(r.buf); err != nil {
			return len(p), err
		}
		r.buf = nil
	}
	return len(p), nil
}

func (r *writer) emit(line []byte) error {
	_, err := io.WriteString(r.w, String(string(line), r.secrets...))
	return err
}

func (r *writer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) == 0 {
		return nil
	}
	err := r.emit(r.buf)
	r.buf = nil
	return err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
