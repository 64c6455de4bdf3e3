package pipeline_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"go.yaml.in/yaml/v3"
)

// Hostile pipeline files: each is refused with a positioned error that says
// why, and costs bounded memory. Memory is asserted (bytes allocated, which
// does not depend on the machine's speed); time is only logged.

// maxCost is what refusing any hostile file may allocate. The worst case is
// a file just under MaxFileSize full of tiny values, about 130 MiB of
// short-lived YAML nodes; everything else costs far less.
const maxCost = 192 << 20

// cost runs f and returns its wall time and the bytes the process allocated
// meanwhile. Tests of this package do not run in parallel, so the bytes are
// f's.
func cost(f func()) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	return d, after.TotalAlloc - before.TotalAlloc
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// checkRefused asserts err is a positioned pipeline.Errors in file that
// contains want, and that the refusal allocated at most limit bytes.
func checkRefused(t *testing.T, err error, file, want string, took time.Duration, alloc, limit uint64) {
	t.Helper()
	var errs pipeline.Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("error = %v, want pipeline.Errors", err)
	}
	found := false
	for _, e := range errs {
		if e.Pos.File != file || e.Pos.Line < 1 || e.Pos.Col < 1 {
			t.Errorf("error %q is not positioned in %s", e, file)
		}
		found = found || strings.Contains(e.Error(), want)
	}
	if !found {
		t.Errorf("error =\n%v\nwant one containing %q", err, want)
	}
	if alloc > limit {
		t.Errorf("refusing it allocated %s, more than %s", mib(alloc), mib(limit))
	}
	first := errs[0].Error()
	if len(first) > 200 {
		first = first[:200] + "…"
	}
	t.Logf("refused in %v, %s allocated, %d errors; first: %s", took.Round(time.Millisecond), mib(alloc), len(errs), first)
}

const validHead = "name: p\nstages:\n  a: {uses: exec}\n"

// laughs is the classic "billion laughs": ten levels, each a list of ten
// aliases to the level before, so *l9 stands for 10^9 strings.
func laughs() string {
	var b strings.Builder
	b.WriteString("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
	}
	return b.String()
}

// wideBomb fits the shape of the pipeline file, so the decoder does follow
// its aliases: envs environments that each alias one environment whose
// hosts alias one list of hosts names, envs×hosts values in all.
func wideBomb(envs, hosts int) string {
	var b strings.Builder
	b.WriteString(validHead)
	b.WriteString("repos: {h: &h [")
	for i := range hosts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("x")
	}
	b.WriteString("]}\nservices: {e: &e {hosts: *h}}\nenvironments: {")
	for i := range envs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "e%d: *e", i)
	}
	b.WriteString("}\n")
	return b.String()
}

func TestAliasBomb(t *testing.T) {
	reg := testRegistry()
	// The YAML library's own bound: decoding the bomb into Go values stops
	// at "excessive aliasing". The loader decodes into yaml.Node, where an
	// alias stays one node, so it needs a bound of its own.
	var v any
	if err := yaml.Unmarshal([]byte(laughs()), &v); err == nil || !strings.Contains(err.Error(), "excessive aliasing") {
		t.Errorf("yaml.Unmarshal of the bomb into any: %v, want excessive aliasing", err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(laughs()), &n); err != nil {
		t.Errorf("yaml.Unmarshal of the bomb into a yaml.Node: %v", err)
	}

	tests := []struct{ name, src, want string }{
		// Where the pipeline has no such key, the bomb is never expanded.
		{"billion laughs at the top", validHead + laughs(), `unknown key "l0"`},
		// Where a list of strings is expected, a list of lists is refused
		// at the first level.
		{"billion laughs as needs", "name: p\n" + laughs() + "stages:\n  a: {uses: exec, needs: *l9}\n", "stages.a.needs.0: want a string, got a list"},
		{"billion laughs as with", "name: p\n" + laughs() + "stages:\n  a: {uses: exec, with: *l9}\n", "stages.a.with: want a mapping, got a list"},
		// 20,000 environments × 20,000 hosts = 4×10^8 values the decoder
		// would visit, from a 160 KB file.
		{"wide bomb", wideBomb(20000, 20000), "aliases expand to more than 10000 values (*e here)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			took, alloc := cost(func() { _, err = pipeline.Parse("bomb.yaml", "/p/bomb.yaml", []byte(tt.src), reg) })
			t.Logf("file: %d bytes", len(tt.src))
			checkRefused(t, err, "bomb.yaml", tt.want, took, alloc, 64<<20)
		})
	}

	// Anchors that share a block are fine: ten stages with one with.
	var ok strings.Builder
	ok.WriteString("name: p\nstages:\n  s0: {uses: exec, with: &w {message: hi}}\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&ok, "  s%d: {uses: exec, with: *w}\n", i)
	}
	p, err := pipeline.Parse("ok.yaml", "/p/ok.yaml", []byte(ok.String()), reg)
	if err != nil {
		t.Fatalf("shared with block: %v", err)
	}
	if got := p.Stages["s9"].Impl.(*noop).Message; got != "hi" {
		t.Errorf("s9 message = %q, want hi", got)
	}
}

func TestDeepNesting(t *testing.T) {
	const deep = 10000
	tests := []struct{ name, src, want string }{
		{"flow lists", "name: p\nstages: " + strings.Repeat("[", deep) + strings.Repeat("]", deep) + "\n", "nesting deeper than 64 levels"},
		{"flow mappings", "name: p\nstages: " + strings.Repeat("{a: ", deep) + "x" + strings.Repeat("}", deep) + "\n", "nesting deeper than 64 levels"},
		{"block lists", "name: p\nstages:\n" + strings.Repeat("- ", deep) + "x\n", "nesting deeper than 64 levels"},
		// One level more and the YAML parser itself stops.
		{"flow lists past the parser's bound", "name: p\nstages: " + strings.Repeat("[", deep+1) + strings.Repeat("]", deep+1) + "\n", "exceeded max depth of 10000"},
		// Just past the loader's bound.
		{"65 levels", "name: p\nstages: " + strings.Repeat("[", 65) + strings.Repeat("]", 65) + "\n", "nesting deeper than 64 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			took, alloc := cost(func() { _, err = pipeline.Parse("deep.yaml", "/p/deep.yaml", []byte(tt.src), testRegistry()) })
			t.Logf("file: %d bytes", len(tt.src))
			checkRefused(t, err, "deep.yaml", tt.want, took, alloc, 64<<20)
		})
	}
}

// padTo pads a valid pipeline file with comment lines to exactly size bytes.
func padTo(size int) []byte {
	b := make([]byte, size)
	n := copy(b, validHead)
	for i := n; i < size; i++ {
		switch (i - n) % 80 {
		case 0:
			b[i] = '#'
		case 79:
			b[i] = '\n'
		default:
			b[i] = 'x'
		}
	}
	return b
}

func TestHugeFile(t *testing.T) {
	dir := t.TempDir()
	limit := fmt.Sprintf("larger than the %d bytes (1 MiB) a pipeline file may be", pipeline.MaxFileSize)

	t.Run("50 MB file", func(t *testing.T) {
		name := filepath.Join(dir, "huge.yaml")
		if err := os.WriteFile(name, padTo(50<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		var err error
		took, alloc := cost(func() { _, err = pipeline.Load(name, testRegistry()) })
		// Refused from its size alone: nothing is read.
		checkRefused(t, err, name, "the file is 52428800 bytes, "+limit, took, alloc, 1<<20)
	})

	t.Run("50 MB through a pipe", func(t *testing.T) {
		name := filepath.Join(dir, "pipe.yaml")
		if err := syscall.Mkfifo(name, 0o600); err != nil {
			t.Fatal(err)
		}
		data := padTo(50 << 20)
		wrote := make(chan error, 1)
		go func() {
			w, err := os.OpenFile(name, os.O_WRONLY, 0)
			if err != nil {
				wrote <- err
				return
			}
			_, err = w.Write(data)
			w.Close()
			wrote <- err
		}()
		var err error
		took, alloc := cost(func() { _, err = pipeline.Load(name, testRegistry()) })
		// The loader reads one byte past the limit and closes the pipe.
		if werr := <-wrote; !errors.Is(werr, syscall.EPIPE) {
			t.Errorf("writer: %v, want a broken pipe", werr)
		}
		checkRefused(t, err, name, "the file is "+limit, took, alloc, 8<<20)
	})

	t.Run("50 MB given to Parse", func(t *testing.T) {
		data := padTo(50 << 20)
		var err error
		took, alloc := cost(func() { _, err = pipeline.Parse("huge.yaml", "/p/huge.yaml", data, testRegistry()) })
		checkRefused(t, err, "huge.yaml", limit, took, alloc, 1<<20)
	})

	t.Run("one byte over", func(t *testing.T) {
		name := filepath.Join(dir, "over.yaml")
		if err := os.WriteFile(name, padTo(pipeline.MaxFileSize+1), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := pipeline.Load(name, testRegistry())
		checkRefused(t, err, name, "the file is 1048577 bytes, "+limit, 0, 0, 1)
	})

	t.Run("exactly the limit loads", func(t *testing.T) {
		name := filepath.Join(dir, "max.yaml")
		if err := os.WriteFile(name, padTo(pipeline.MaxFileSize), 0o644); err != nil {
			t.Fatal(err)
		}
		var err error
		took, alloc := cost(func() { _, err = pipeline.Load(name, testRegistry()) })
		if err != nil {
			t.Fatalf("a file of exactly MaxFileSize: %v", err)
		}
		t.Logf("1 MiB of comments loaded in %v, %s allocated", took.Round(time.Millisecond), mib(alloc))
	})

	t.Run("1 MiB of tiny values", func(t *testing.T) {
		// The most values a file within the limit can hold: the decoder
		// stops counting at its bound.
		var b strings.Builder
		b.WriteString(validHead + "repos: {r: {url: u}}\nservices: {s: {repo: r, image: i, volumes: [")
		for b.Len() < pipeline.MaxFileSize-8 {
			b.WriteString("x,")
		}
		b.WriteString("x]}}\n")
		var err error
		took, alloc := cost(func() { _, err = pipeline.Parse("many.yaml", "/p/many.yaml", []byte(b.String()), testRegistry()) })
		t.Logf("file: %d bytes", b.Len())
		checkRefused(t, err, "many.yaml", "more than 262144 values in the file", took, alloc, maxCost)
	})
}

// Branch names are checked as git check-ref-format --branch checks them, so
// a name starting with "-" never reaches anything as an option; names git
// allows, shell metacharacters included, load verbatim (they only ever become
// ref names, never a command line).
func TestBranchNames(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("the git CLI is the reference here: %v", err)
	}
	names := []string{
		"main", "release/1.x", "feature/a-b_c", "v1.0.0", "$(id)", "`id`", "a;b", "a|b", "a&&b", "it's", "naïve",
		"-x", "--force", "--upload-pack=touch canary", "main;rm -rf /", "a\nb", "a\tb", "a..b", "a.lock", ".a", "a/.b",
		"a/", "/a", "a//b", "a.", "a@{1}", "a~1", "a^", "a:b", "a?", "a*", "a[b", `a\b`, "a\x7f",
	}
	for _, name := range names {
		t.Run(strings.ReplaceAll(name, "/", "∕"), func(t *testing.T) {
			gitOK := exec.Command(git, "check-ref-format", "--branch", name).Run() == nil
			src := fmt.Sprintf("name: p\nrepos: {r: {url: ./r, branch: %q}}\nstages: {a: {uses: exec}}\n", name)
			p, err := pipeline.Parse("p.yaml", "/p/p.yaml", []byte(src), testRegistry())
			switch {
			case gitOK && err != nil:
				t.Errorf("git takes %q, the loader refuses it: %v", name, err)
			case gitOK && p.Spec.Repos["r"].Branch != name:
				t.Errorf("branch = %q, want %q verbatim", p.Spec.Repos["r"].Branch, name)
			case !gitOK && err == nil:
				t.Errorf("git refuses %q, the loader takes it", name)
			case !gitOK && !strings.HasPrefix(err.Error(), `p.yaml:2:31: repos.r.branch: `+strconv.Quote(name)+" is not a branch name: "):
				t.Errorf("error %q does not point at repos.r.branch", err)
			case !gitOK:
				t.Logf("%v", err)
			}
		})
	}
}
