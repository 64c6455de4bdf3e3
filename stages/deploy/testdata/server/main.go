// Command server is the service the deploy tests run in containers: it
// answers its version, a health check that the image can be built to fail,
// and finishes in-flight requests on SIGTERM. Run with -healthcheck it
// probes its own /healthz (the image's HEALTHCHECK).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	// -healthcheck is the image's HEALTHCHECK: probe /healthz, exit 0 or 1.
	if len(os.Args) > 1 && os.Args[1] == "-healthcheck" {
		hc := &http.Client{Timeout: 2 * time.Second}
		resp, err := hc.Get("http://127.0.0.1:" + port + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			os.Exit(1)
		}
		os.Exit(0)
	}
	version := "unknown"
	if b, err := os.ReadFile("/version"); err == nil {
		version = strings.TrimSpace(string(b))
	}
	_, err := os.Stat("/fail-health")
	failHealth := err == nil || os.Getenv("FAIL_HEALTH") == "1"

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if failHealth {
			http.Error(w, "unhealthy: "+version+" fails on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		fmt.Fprintln(w, version)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Shutdown returns once in-flight requests are answered.
	<-stopped
}
