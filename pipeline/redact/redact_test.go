package redact

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

func TestString(t *testing.T) {
	const token = "ghp_0123456789abcdef/x+y=z&w"
	tests := []struct{ name, text string }{
		{"plain", "Authorization: Bearer " + token},
		{"basic auth", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))},
		{"query-escaped", "GET /?access_token=" + url.QueryEscape(token)},
		{"path-escaped", "GET /" + url.PathEscape(token) + "/x"},
		{"base64url at offset 1", base64.URLEncoding.EncodeToString([]byte("x" + token + "tail"))},
		{"base64 at offset 2", base64.StdEncoding.EncodeToString([]byte("xy" + token + "tail"))},
	}
	for _, tt := range tests {
		got := String(tt.text, token)
		if !strings.Contains(got, "***") {
			t.Errorf("%s: %q, want the token replaced by ***", tt.name, got)
		}
		if strings.Contains(got, token) || strings.Contains(got, base64Core(base64.RawStdEncoding, token, 0)) {
			t.Errorf("%s: %q still holds the token", tt.name, got)
		}
	}
	if got := String("nothing secret here", token, ""); got != "nothing secret here" {
		t.Errorf("text without the token changed: %q", got)
	}
}

func TestErrorKeepsTheChain(t *testing.T) {
	const token = "ghp_0123456789abcdef"
	err := fmt.Errorf("push: %w: forbidden for Bearer %s", transport.ErrAuthorizationFailed, token)
	got := Error(err, token)
	if strings.Contains(got.Error(), token) || !errors.Is(got, transport.ErrAuthorizationFailed) {
		t.Errorf("Error = %q (is ErrAuthorizationFailed: %v)", got, errors.Is(got, transport.ErrAuthorizationFailed))
	}
	if plain := errors.New("no token"); Error(plain, token) != plain {
		t.Error("an error without the token was wrapped")
	}
}

func TestWriter(t *testing.T) {
	var out strings.Builder
	w := Writer(&out, "s3cr3t-canary-value")
	for _, chunk := range []string{"token=s3cr3t-can", "ary-value here\nsecond ", "line " + base64.StdEncoding.EncodeToString([]byte("u:s3cr3t-canary-value")) + "\nno newline s3cr3t-canary-value"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cr3t") || strings.Contains(out.String(), base64.StdEncoding.EncodeToString([]byte("u:s3cr3t-canary-value"))[4:20]) {
		t.Errorf("secret passed through: %q", out.String())
	}
	if !strings.HasPrefix(out.String(), "token=*** here\nsecond line ") || !strings.HasSuffix(out.String(), "no newline ***") {
		t.Errorf("output %q", out.String())
	}
}

// countingWriter counts the writes it gets.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// The complete lines of one write reach w in one write: w may be a store
// that waits on each, when it does not answer.
func TestWriterOneWritePerWrite(t *testing.T) {
	var w countingWriter
	rw := Writer(&w, "s3cret")
	rw.Write([]byte("a s3cret\nb\nc s3cret\npart"))
	if got, want := w.String(), "a ***\nb\nc ***\n"; got != want || w.writes != 1 {
		t.Errorf("got %q in %d writes, want %q in 1", got, w.writes, want)
	}
	rw.Close()
	if got, want := w.String(), "a ***\nb\nc ***\npart"; got != want {
		t.Errorf("after Close: %q, want %q", got, want)
	}
}
