// Command netprobe is the client the deploy tests run in a container on an
// environment network, where services answer to their names:
//
//	netprobe get URL    GET URL until it answers 200 (for up to 20s), print the body
//	netprobe load URL   GET URL in a loop until SIGTERM, then print ok=N failed=N first-error="…"
//
// Every request of load is on a new connection, so each one asks the
// network's DNS for the name anew.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: netprobe get|load URL")
		os.Exit(2)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := os.Args[2]
	get := func() (string, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return "", err
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
		for ctx.Err() == nil {
			if _, err := get(); err != nil {
				failed++
				if first == "" {
					first = err.Error()
				}
			} else {
				ok++
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("ok=%d failed=%d first-error=%q\n", ok, failed, first)
	default:
		os.Exit(2)
	}
}
