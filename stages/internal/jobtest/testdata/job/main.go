// Command job is the job binary of the docker-run and docker-exec tests,
// copied into the fixture service images beside the service: a static
// program, since the images are FROM scratch.
//
//	job migrate URL VAR    GET URL/secret and URL/chain; exit 0 when the
//	                       service reports the SHA-256 of VAR's value as
//	                       this process has it, 3 otherwise. It prints the
//	                       value too, for the tests to see it hidden.
//	job fail CODE          print a line on stdout and stderr, exit CODE
//	job once FILE GATE CODE  append "run HOSTNAME" to FILE, print STARTED,
//	                       wait for GATE to exist, exit CODE
//	job mark FILE          append "start HOSTNAME", sleep 300ms, append
//	                       "end HOSTNAME": calls at once interleave
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: job migrate|fail|once|mark ARGS")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "migrate":
		need(args, 2)
		migrate(args[0], args[1])
	case "fail":
		need(args, 1)
		code, _ := strconv.Atoi(args[0])
		fmt.Println("failing on purpose with status", code)
		fmt.Fprintln(os.Stderr, "failing on purpose, on stderr")
		os.Exit(code)
	case "once":
		need(args, 3)
		appendLine(args[0], "run "+host())
		fmt.Println("STARTED")
		for {
			if _, err := os.Stat(args[1]); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		code, _ := strconv.Atoi(args[2])
		fmt.Println("gate open: exiting with status", code)
		os.Exit(code)
	case "mark":
		need(args, 1)
		appendLine(args[0], "start "+host())
		time.Sleep(300 * time.Millisecond)
		appendLine(args[0], "end "+host())
		fmt.Println("marked", host())
	default:
		fail("unknown command " + os.Args[1])
	}
}

func migrate(url, name string) {
	client := http.Client{Timeout: 5 * time.Second}
	get := func(path string) string {
		resp, err := client.Get(url + path)
		if err != nil {
			fail(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			fail(fmt.Sprintf("GET %s%s: %s: %s", url, path, resp.Status, b))
		}
		return strings.TrimSpace(string(b))
	}
	fmt.Println("chain:", get("/chain"))
	theirs := get("/secret")
	v := os.Getenv(name)
	fmt.Printf("job sees %s=%s\n", name, v)
	mine := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(v)))
	if v == "" || theirs != mine {
		fmt.Printf("secret differs: the service has %s, the job %s\n", theirs, mine)
		os.Exit(3)
	}
	fmt.Println("secret matches:", mine)
}

func host() string {
	h, _ := os.Hostname()
	return h
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fail(err.Error())
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		fail(err.Error())
	}
	if err := f.Close(); err != nil {
		fail(err.Error())
	}
}

func need(args []string, n int) {
	if len(args) < n {
		fail(fmt.Sprintf("%s: want %d arguments", os.Args[1], n))
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "job:", msg)
	os.Exit(2)
}
