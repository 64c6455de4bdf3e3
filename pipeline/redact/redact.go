// Package redact keeps secrets out of text that may quote what a server or
// proxy echoed back of a request: error messages, log lines, stored errors.
package redact

import (
	"encoding/base64"
	"net/url"
	"strings"
)

// String removes secrets from text in the forms they travel in over HTTP
// and come back in when a server or proxy echoes a request: as they are,
// URL-escaped, and base64-encoded at any offset, which covers a basic-auth
// header (base64("x-access-token:TOKEN") holds the token at an offset).
func String(text string, secrets ...string) string {
	for _, s := range secrets {
		if s == "" {
			continue
		}
		forms := []string{s, url.QueryEscape(s), url.PathEscape(s)}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			for pad := 0; pad < 3; pad++ {
				// A short core would match unrelated base64.
				if core := base64Core(enc, s, pad); len(core) >= 8 {
					forms = append(forms, core)
				}
			}
		}
		for _, f := range forms {
			text = strings.ReplaceAll(text, f, "***")
		}
	}
	return text
}

// base64Core is the part of the encoding of s, preceded by pad other
// bytes, that depends on s alone: what any base64 text holding s at that
// alignment contains.
func base64Core(enc *base64.Encoding, s string, pad int) string {
	e := enc.EncodeToString(append(make([]byte, pad), s...))
	return e[(8*pad+5)/6 : 8*(pad+len(s))/6]
}

// Error hides secrets in err's text, replacing each by ***; errors.Is and
// errors.As still see err. It returns err itself when its text holds none.
func Error(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := String(err.Error(), secrets...)
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
