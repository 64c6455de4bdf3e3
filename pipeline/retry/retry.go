// Package retry is the one retry policy and the one transient-error
// classifier for every call release makes to the outside: the Docker
// engine, the registry, git remotes, GitHub, Caddy and the state store.
//
// A failure is worth another attempt when it happened on the way to or
// from the peer (a refused, reset or cut connection, a deadline of one
// attempt, an HTTP 5xx, 408 or 429) or when the peer asked for a wait
// (Retry-After, or X-RateLimit-Remaining: 0 with X-RateLimit-Reset). An
// answer that says no (bad credentials, no such thing, a refusal) is final.
// Adapters that know their library's errors add a Classifier; the policy
// supplies the waits: exponential backoff with jitter, capped, a wait the
// peer asked for honoured up to MaxWait, and a budget for the whole call.
package retry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Verdict is what a classifier says about one failure.
type Verdict struct {
	// Retry says another attempt may succeed.
	Retry bool
	// After is the wait the peer asked for (Retry-After, a rate limit's
	// reset); 0 means the policy's backoff.
	After time.Duration
	// Limited says the peer rate-limits the caller; with no After, the
	// policy's SecondaryWait is waited.
	Limited bool
	// Reason names the cause in a report: "rate limited", "503",
	// "connection refused".
	Reason string
}

// Final is the verdict for a failure no retry changes.
var Final = Verdict{}

// A Classifier judges an error its adapter knows. ok false leaves the
// error to the next classifier and, last, to Classify.
type Classifier func(err error) (v Verdict, ok bool)

// Policy says how often and how long a call is tried. The zero Policy is
// Default's.
type Policy struct {
	// Attempts in all, the first included; 0 is 5.
	Attempts int
	// Backoff before the second attempt, doubled each time, with up to a
	// fifth of jitter; 0 is 1s.
	Backoff time.Duration
	// MaxBackoff caps one backoff; 0 is 30s.
	MaxBackoff time.Duration
	// MaxWait is the longest wait a peer may ask for (Retry-After, a
	// rate limit's reset) that is waited out; a longer one fails the call
	// at once, naming the wait. 0 is 2m.
	MaxWait time.Duration
	// SecondaryWait is the wait after a rate limit that names none:
	// GitHub asks for at least a minute after its secondary limit. 0 is 1m.
	SecondaryWait time.Duration
	// Budget bounds the whole call, attempts and waits together; 0 is no
	// bound beyond the context's.
	Budget time.Duration
	// Classify, when set, is asked before the built-in classifier.
	Classify []Classifier
	// Report, when set, is told of each wait before it starts.
	Report func(Wait)
}

// Default is the policy of a call that sets none.
var Default = Policy{}

// Wait is one retry, as reported before its wait.
type Wait struct {
	What    string        // the call: "push api", "create release of org/api"
	Attempt int           // the attempt that failed, from 1
	Of      int           // attempts in all
	Wait    time.Duration // the wait before the next one
	Asked   bool          // the peer asked for the wait
	Limited bool          // the peer rate-limits the caller
	Reason  string
	Err     error
}

func (w Wait) String() string {
	how := "backing off"
	if w.Asked {
		how = "as the peer asked"
	}
	return fmt.Sprintf("%s: attempt %d of %d failed (%s); waiting %s, %s", w.What, w.Attempt, w.Of, w.Reason, w.Wait.Round(time.Millisecond), how)
}

// With returns a copy of p with the classifiers appended.
func (p Policy) With(c ...Classifier) Policy {
	p.Classify = append(append([]Classifier(nil), p.Classify...), c...)
	return p
}

// Reporting returns a copy of p that reports waits to r.
func (p Policy) Reporting(r func(Wait)) Policy {
	p.Report = r
	return p
}

func (p Policy) attempts() int { return cmp.Or(p.Attempts, 5) }

func (p Policy) maxWait() time.Duration { return cmp.Or(p.MaxWait, 2*time.Minute) }

// backoff is the wait after the attempt'th failure.
func (p Policy) backoff(attempt int) time.Duration {
	b := cmp.Or(p.Backoff, time.Second)
	limit := cmp.Or(p.MaxBackoff, 30*time.Second)
	for i := 1; i < attempt && b < limit; i++ {
		b *= 2
	}
	b = min(b, limit)
	return b + time.Duration(rand.Int64N(int64(b)/5+1))
}

// Judge classifies err with p's classifiers, then the built-in one.
func (p Policy) Judge(err error) Verdict {
	for _, c := range p.Classify {
		if v, ok := c(err); ok {
			return v
		}
	}
	return Classify(err)
}

// TooLongError is a wait the peer asked for that is longer than the
// policy's MaxWait.
type TooLongError struct {
	What  string
	Asked time.Duration
	Bound time.Duration
	Err   error
}

func (e *TooLongError) Error() string {
	return fmt.Sprintf("%s: the peer asks to wait %s, more than the %s bound: %v", e.What, e.Asked.Round(time.Second), e.Bound, e.Err)
}

func (e *TooLongError) Unwrap() error { return e.Err }

// Do calls f until it succeeds, fails with a final error, or the attempts
// or the budget are spent. ctx ends it at once. Each attempt gets ctx
// (bounded by the budget); the error returned is f's last, wrapped with
// the number of attempts when there was more than one.
func (p Policy) Do(ctx context.Context, what string, f func(context.Context) error) error {
	if p.Budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Budget)
		defer cancel()
	}
	n := p.attempts()
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return withAttempts(err, attempt)
		}
		v := p.Judge(err)
		if !v.Retry {
			return withAttempts(err, attempt)
		}
		if attempt >= n {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		wait, asked := p.backoff(attempt), false
		if v.Limited && v.After == 0 {
			v.After = cmp.Or(p.SecondaryWait, time.Minute)
		}
		if v.After > 0 {
			if v.After > p.maxWait() {
				return &TooLongError{What: what, Asked: v.After, Bound: p.maxWait(), Err: err}
			}
			wait, asked = v.After, true
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return fmt.Errorf("%w (attempt %d; the next would start after the deadline)", err, attempt)
		}
		if p.Report != nil {
			p.Report(Wait{What: what, Attempt: attempt, Of: n, Wait: wait, Asked: asked, Limited: v.Limited, Reason: v.Reason, Err: err})
		}
		if err := Sleep(ctx, wait); err != nil {
			return withAttempts(fmt.Errorf("%w; interrupted while waiting to try again", err), attempt)
		}
	}
}

func withAttempts(err error, attempt int) error {
	if attempt == 1 {
		return err
	}
	return fmt.Errorf("%w (after %d attempts)", err, attempt)
}

// Sleep waits d or until ctx ends, whichever comes first.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Classify is the built-in classifier: network failures and HTTP statuses.
// A cancelled context is final; a deadline of one attempt (a net.Error
// that timed out) is not.
func Classify(err error) Verdict {
	if err == nil || errors.Is(err, context.Canceled) {
		return Final
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Verdict()
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return Verdict{Retry: true, Reason: "timed out"}
	case errors.Is(err, context.DeadlineExceeded):
		// The caller's own deadline: final, the caller decided.
		return Final
	case errors.Is(err, syscall.ECONNREFUSED):
		return Verdict{Retry: true, Reason: "connection refused"}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED):
		return Verdict{Retry: true, Reason: "connection reset"}
	case errors.Is(err, syscall.EPIPE):
		return Verdict{Retry: true, Reason: "broken pipe"}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Verdict{Retry: true, Reason: "unreachable"}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return Verdict{Retry: true, Reason: "connection cut"}
	}
	var de *net.DNSError
	if errors.As(err, &de) && (de.IsTemporary || de.IsTimeout) {
		return Verdict{Retry: true, Reason: "name lookup failed"}
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return Verdict{Retry: true, Reason: oe.Op + " failed"}
	}
	return Final
}

// Text classifies a failure that a peer reported only as text (the Docker
// engine relays a registry's network error as a message): the phrases of
// the network failures Classify knows.
func Text(msg string) Verdict {
	for _, s := range []struct{ phrase, reason string }{
		{"connection refused", "connection refused"},
		{"connection reset by peer", "connection reset"},
		{"broken pipe", "broken pipe"},
		{"unexpected EOF", "connection cut"},
		{": EOF", "connection cut"},
		{"i/o timeout", "timed out"},
		{"TLS handshake timeout", "timed out"},
		{"Client.Timeout exceeded", "timed out"},
	} {
		if strings.Contains(msg, s.phrase) {
			return Verdict{Retry: true, Reason: s.reason}
		}
	}
	return Final
}

// StatusError is an HTTP answer that was not a success, with what it said
// about retrying.
type StatusError struct {
	Method, URL string // the request, without credentials
	Status      int
	Body        string        // the start of the body, for the message
	After       time.Duration // what the peer asked to wait; 0 when nothing
	Limited     bool          // a rate limit (429, or 403 with one of its headers)
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Verdict is what the status says: 5xx, 408 and 429 are worth another
// attempt, and so is a 403 that is a rate limit; the rest is final.
func (e *StatusError) Verdict() Verdict {
	reason := strconv.Itoa(e.Status)
	if e.Limited {
		reason = "rate limited (" + reason + ")"
	}
	switch {
	case e.Limited, e.Status >= 500, e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooManyRequests:
		return Verdict{Retry: true, After: e.After, Limited: e.Limited, Reason: reason}
	}
	return Final
}

// FromResponse returns nil for a 2xx or 3xx answer and a StatusError for
// the rest, reading the waits the peer asked for from its headers. It reads
// up to 512 bytes of the body for the message; the caller closes it.
func FromResponse(resp *http.Response) error {
	if resp.StatusCode < 400 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	method, url := "", ""
	if resp.Request != nil {
		method = resp.Request.Method
		if resp.Request.URL != nil {
			u := *resp.Request.URL
			u.User = nil
			u.RawQuery = ""
			url = u.String()
		}
	}
	after, limited := Asked(resp.StatusCode, resp.Header, time.Now())
	return &StatusError{Method: method, URL: url, Status: resp.StatusCode, Body: strings.TrimSpace(string(b)),
		After: after, Limited: limited}
}

// Asked reads the wait a peer asked for from an answer's headers, GitHub's
// rules being the most detailed: Retry-After (seconds or an HTTP date)
// first; else, with X-RateLimit-Remaining: 0, until X-RateLimit-Reset (Unix
// seconds). limited says the answer is a rate limit: a 429, or a 403 that
// carries either sign. A rate limit with neither header (GitHub's
// secondary limit may send none) asks for nothing: the policy's
// SecondaryWait applies.
func Asked(status int, h http.Header, now time.Time) (after time.Duration, limited bool) {
	if ra := h.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(strings.TrimSpace(ra)); err == nil && secs >= 0 {
			after = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			after = max(t.Sub(now), 0)
		}
		limited = status == http.StatusTooManyRequests || status == http.StatusForbidden || status == http.StatusServiceUnavailable
		return max(after, time.Millisecond), limited
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			// The reset is a whole second; a second more covers clock skew.
			after = max(time.Unix(reset, 0).Sub(now)+time.Second, time.Millisecond)
		}
		return after, status == http.StatusTooManyRequests || status == http.StatusForbidden
	}
	return 0, status == http.StatusTooManyRequests
}
