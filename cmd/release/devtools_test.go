package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// devtools is a client of the Chrome DevTools Protocol over
// --remote-debugging-pipe: Chromium reads JSON commands from its fd 3 and
// writes answers and events to its fd 4, each message ended by a NUL
// byte. No port, no websocket, no dependency.
type devtools struct {
	cmd *exec.Cmd
	in  io.WriteCloser // Chromium's fd 3

	mu      sync.Mutex
	next    int
	waiting map[int]chan devtoolsReply
	closed  error // why the pipe ended, once it did
}

type devtoolsReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startDevtools starts headless Chromium with the DevTools protocol on a
// pipe; the browser is closed when the test ends.
func startDevtools(t *testing.T, browser string, flags ...string) *devtools {
	t.Helper()
	toChrome, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--remote-debugging-pipe", "--user-data-dir=" + t.TempDir()}, flags...)
	cmd := exec.Command(browser, append(args, "about:blank")...)
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome} // fd 3 and fd 4
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	toChrome.Close()
	fromChrome.Close()
	d := &devtools{cmd: cmd, in: in, waiting: map[int]chan devtoolsReply{}}
	go d.read(out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.call(ctx, "", "Browser.close", nil, nil)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		in.Close()
		if t.Failed() {
			t.Logf("chromium stderr:\n%s", stderr)
		}
	})
	return d
}

func (d *devtools) read(out io.ReadCloser) {
	defer out.Close()
	r := bufio.NewReader(out)
	var err error
	for {
		var msg []byte
		msg, err = r.ReadBytes(0)
		if err != nil {
			break
		}
		var reply devtoolsReply
		if json.Unmarshal(msg[:len(msg)-1], &reply) != nil || reply.ID == 0 {
			continue // an event: the test polls the page instead
		}
		d.mu.Lock()
		ch := d.waiting[reply.ID]
		delete(d.waiting, reply.ID)
		d.mu.Unlock()
		if ch != nil {
			ch <- reply
		}
	}
	d.mu.Lock()
	d.closed = fmt.Errorf("the DevTools pipe closed: %w", err)
	for id, ch := range d.waiting {
		close(ch)
		delete(d.waiting, id)
	}
	d.mu.Unlock()
}

// call sends method with params to the target of session ("" for the
// browser) and decodes its result into result (when not nil).
func (d *devtools) call(ctx context.Context, session, method string, params, result any) error {
	d.mu.Lock()
	if d.closed != nil {
		d.mu.Unlock()
		return d.closed
	}
	d.next++
	id := d.next
	ch := make(chan devtoolsReply, 1)
	d.waiting[id] = ch
	d.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := d.in.Write(append(b, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case reply, ok := <-ch:
		switch {
		case !ok:
			return fmt.Errorf("%s: %w", method, d.closed)
		case reply.Error != nil:
			return fmt.Errorf("%s: %s (%d)", method, reply.Error.Message, reply.Error.Code)
		case result != nil:
			return json.Unmarshal(reply.Result, result)
		}
		return nil
	case <-ctx.Done():
		d.mu.Lock()
		delete(d.waiting, id)
		d.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// tab is one page of the browser, attached to with a session of its own.
type tab struct {
	t       *testing.T
	d       *devtools
	session string
}

// newTab opens a page of width × height CSS pixels.
func (d *devtools) newTab(t *testing.T, width, height int) *tab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var target struct{ TargetID string }
	if err := d.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatal(err)
	}
	var attached struct{ SessionID string }
	if err := d.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		t.Fatal(err)
	}
	p := &tab{t: t, d: d, session: attached.SessionID}
	p.do("Page.enable", nil, nil)
	p.do("Runtime.enable", nil, nil)
	p.do("Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	return p
}

func (p *tab) do(method string, params, result any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.d.call(ctx, p.session, method, params, result); err != nil {
		p.t.Fatal(err)
	}
}

// open navigates to url and waits until the document has loaded.
func (p *tab) open(url string) {
	p.t.Helper()
	var nav struct{ ErrorText string }
	p.do("Page.navigate", map[string]any{"url": url}, &nav)
	if nav.ErrorText != "" {
		p.t.Fatalf("open %s: %s", url, nav.ErrorText)
	}
	p.waitFor("the page loaded", `document.readyState === "complete" && location.href === `+jsString(url), 20*time.Second)
}

// eval runs a JavaScript expression in the page, awaiting a promise it
// returns, and decodes its value into v (when not nil).
func (p *tab) eval(expr string, v any) {
	p.t.Helper()
	if err := p.evalErr(expr, v); err != nil {
		p.t.Fatal(err)
	}
}

func (p *tab) evalErr(expr string, v any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.d.call(ctx, p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("evaluate %s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if v != nil {
		if len(res.Result.Value) == 0 {
			return errors.New("evaluate " + expr + ": no value")
		}
		return json.Unmarshal(res.Result.Value, v)
	}
	return nil
}

// waitFor polls a JavaScript condition until it holds.
func (p *tab) waitFor(what, cond string, limit time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var ok bool
		err := p.evalErr("Boolean("+cond+")", &ok)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: not after %s (%v)", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// text is the text content of the first element matching selector, "" when
// there is none.
func (p *tab) text(selector string) string {
	p.t.Helper()
	var s string
	p.eval(`(function(){var e=document.querySelector(`+jsString(selector)+`);return e?e.textContent:"";})()`, &s)
	return strings.Join(strings.Fields(s), " ")
}

// screenshot is a PNG of what the page shows.
func (p *tab) screenshot() []byte {
	p.t.Helper()
	var shot struct{ Data string }
	p.do("Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	b, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

// screenshotOf is a PNG of the element matching selector, whole, though
// it reaches beyond the window.
func (p *tab) screenshotOf(selector string) []byte {
	p.t.Helper()
	var r struct{ X, Y, Width, Height float64 }
	p.eval(`(function(){var b=document.querySelector(`+jsString(selector)+`).getBoundingClientRect();
		return {X: b.left + window.scrollX, Y: b.top + window.scrollY, Width: b.width, Height: b.height};})()`, &r)
	// A margin of the page around it.
	const m = 16
	r.X, r.Y, r.Width, r.Height = max(r.X-m, 0), max(r.Y-m, 0), r.Width+2*m, r.Height+2*m
	var shot struct{ Data string }
	p.do("Page.captureScreenshot", map[string]any{
		"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": r.X, "y": r.Y, "width": r.Width, "height": r.Height, "scale": 1},
	}, &shot)
	b, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
