package main

import (
	"flag"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/fixtures/gitserver"
)

var update = flag.Bool("update", false, "rewrite the expected output in testdata/script")

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"release": func() { os.Exit(runWith(scriptKinds)) },
	})
}

// TestScript runs the end-to-end scripts: one behaviour per file, the real
// command line against a real SQLite store and real processes.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/script",
		UpdateScripts: *update,
		Setup: func(env *testscript.Env) error {
			env.Setenv("RELEASE_USER", "tester")
			env.Setenv("NO_COLOR", "1")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// stdout2env NAME: set NAME to the first line of the last
			// command's stdout (a run id).
			"stdout2env": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: stdout2env NAME")
				}
				first, _, _ := strings.Cut(ts.ReadFile("stdout"), "\n")
				ts.Setenv(args[0], strings.TrimSpace(first))
			},
			// fakegithub VAR TOKEN: serve the fake GitHub API for the rest
			// of the script, requiring TOKEN; VAR gets its api_url.
			"fakegithub": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: fakegithub VAR TOKEN")
				}
				srv := httptest.NewServer(fakegithub.New(args[1]))
				ts.Defer(srv.Close)
				ts.Setenv(args[0], srv.URL+"/")
			},
			// gitserver VAR DIR TOKEN READTOKEN: serve the bare repos
			// under DIR over smart HTTP for the rest of the script: TOKEN
			// may push, READTOKEN only fetch. VAR gets the base URL.
			"gitserver": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 4 {
					ts.Fatalf("usage: gitserver VAR DIR TOKEN READTOKEN")
				}
				h, err := gitserver.New(ts.MkAbs(args[1]), args[2], gitserver.WithReadToken(args[3]))
				ts.Check(err)
				srv := httptest.NewServer(h)
				ts.Defer(srv.Close)
				ts.Setenv(args[0], srv.URL)
			},
			"registry": registryCmd,
			// lines FILE N: FILE has exactly N lines.
			"lines": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: lines FILE N")
				}
				got := strings.Count(ts.ReadFile(args[0]), "\n")
				if (strings.TrimSpace(args[1]) == strconv.Itoa(got)) == neg {
					ts.Fatalf("%s has %d lines, want %s", args[0], got, args[1])
				}
			},
		},
	})
}
