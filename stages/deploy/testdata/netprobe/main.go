// Command netprobe is the client the deploy tests run in a container on an
// environment network, where services answer to their names:
//
//	netprobe get URL    GET URL until it answers 200 (for up to 20s), print the body
//	netprobe load URL   GET URL in a loop until SIGTERM, then print ok=N failed=N first-error="…" slowest=D
//
// Every request of load is on a new connection, so each one asks the
// network's DNS for the name anew.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: netprobe get|load URL")
		os.Exit(2)
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := os.Args[2]
	get := func() (string, error) {
		// What the request went through, told with its error: a failure
		// says whether it was the DNS, a connect or the answer.
		var steps []string
		start := time.Now()
		step := func(format string, args ...any) {
			steps = append(steps, fmt.Sprintf("%s %s", time.Since(start).Round(time.Millisecond), fmt.Sprintf(format, args...)))
		}
		trace := &httptrace.ClientTrace{
			DNSDone:      func(i httptrace.DNSDoneInfo) { step("dns %v %v", i.Addrs, i.Err) },
			ConnectStart: func(_, addr string) { step("connect %s", addr) },
			ConnectDone:  func(_, addr string, err error) { step("connected %s %v", addr, err) },
			WroteRequest: func(i httptrace.WroteRequestInfo) { step("wrote %v", i.Err) },
		}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", fmt.Errorf("%w [at %s: %s]", err, start.UTC().Format("15:04:05.000"), strings.Join(steps, "; "))
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %s", resp.Status, body)
		}
		return string(body), nil
	}
	switch os.Args[1] {
	case "get":
		deadline := time.Now().Add(20 * time.Second)
		for {
			body, err := get()
			if err == nil {
				fmt.Print(body)
				return
			}
			if time.Now().After(deadline) {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	case "load":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		ok, failed, first := 0, 0, ""
		var slowest time.Duration
		for ctx.Err() == nil {
			start := time.Now()
			_, err := get()
			slowest = max(slowest, time.Since(start))
			if err != nil {
				failed++
				if first == "" {
					first = err.Error()
				}
			} else {
				ok++
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("ok=%d failed=%d first-error=%q slowest=%s\n", ok, failed, first, slowest.Round(time.Millisecond))
	default:
		os.Exit(2)
	}
}
