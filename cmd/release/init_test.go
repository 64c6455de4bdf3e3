package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/stages/builtin"
	"go.yaml.in/yaml/v3"
)

func TestExposedPorts(t *testing.T) {
	tests := []struct {
		name, dockerfile string
		want             []int
	}{
		{"one", "FROM scratch\nEXPOSE 8080\n", []int{8080}},
		{"protocol and several", "FROM scratch\nexpose 8080/tcp 9090/udp\n", []int{8080, 9090}},
		{"range", "FROM scratch\nEXPOSE 8000-8010\n", []int{8000}},
		{"final stage only", "FROM golang AS build\nEXPOSE 6060\nFROM scratch\nEXPOSE 8080\n", []int{8080}},
		{"none in the final stage", "FROM golang AS build\nEXPOSE 6060\nFROM scratch\n", nil},
		{"ARG default", "FROM scratch\nARG PORT=3000\nEXPOSE $PORT\n", []int{3000}},
		{"ENV, old form", "FROM scratch\nENV PORT 3000\nEXPOSE ${PORT}\n", []int{3000}},
		{"variable default", "FROM scratch\nEXPOSE ${PORT:-4000}\n", []int{4000}},
		{"unknown variable", "FROM scratch\nEXPOSE $PORT\n", nil},
		{"continuation", "FROM scratch\nEXPOSE \\\n  8080\n", []int{8080}},
		{"comment", "FROM scratch\n# EXPOSE 1234\nEXPOSE 8080\n", []int{8080}},
		{"not a port", "FROM scratch\nEXPOSE 70000 0 http\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, exposedPorts([]byte(tt.dockerfile))); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
		})
	}
}

// TestScalar: every string comes back from YAML as itself.
func TestScalar(t *testing.T) {
	for _, s := range []string{"api", "8080", "true", "null", "~", "", "a: b", "a #b", "- x", "[x]", "{x}", "*x", "&x", "!x", "%x", "@x", "`x", "'x", `"x"`, "a\nb", "tab\there", "git@github.com:o/r.git", "https://h/p?q=1#f", " lead", "trail ", "café", "yes", "0x1F", "1e3"} {
		var got struct{ V string }
		if err := yaml.Unmarshal([]byte("v: "+scalar(s)+"\n"), &got); err != nil {
			t.Errorf("%q as %s: %v", s, scalar(s), err)
			continue
		}
		if got.V != s {
			t.Errorf("%q as %s reads back as %q", s, scalar(s), got.V)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"shop": "shop", "My Shop": "my-shop", "api.git": "api-git", "__x__": "x", "": "app", "日本": "app", "a--b": "a-b"} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestURLRepoName(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/o/api.git":  "api",
		"https://github.com/o/api/":     "api",
		"git@github.com:o/web.git":      "web",
		"ssh://git@h:2222/srv/auth.git": "auth",
		"git@h:auth":                    "auth",
	} {
		if got := urlRepoName(in); got != want {
			t.Errorf("urlRepoName(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"https://github.com/sweepboard/api.git": "sweepboard",
		"https://x-access-token@github.com/o/r": "o",
		"git@github.com:sweep-board/r.git":      "sweep-board",
		"ssh://git@github.com/o/r.git":          "o",
		"https://gitlab.com/o/r.git":            "",
		"https://github.com/o":                  "",
	} {
		if got := githubOwner(in); got != want {
			t.Errorf("githubOwner(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWithoutCredentials(t *testing.T) {
	tests := []struct {
		in, want string
		had      bool
	}{
		{"https://x-access-token:ghp_secret@github.com/o/api.git", "https://github.com/o/api.git", true},
		{"https://user@example.com/o/api.git", "https://example.com/o/api.git", true},
		{"https://github.com/o/api.git", "https://github.com/o/api.git", false},
		{"ssh://git@github.com/o/api.git", "ssh://git@github.com/o/api.git", false},
		{"git@github.com:o/api.git", "git@github.com:o/api.git", false},
		{"../remotes/api.git", "../remotes/api.git", false},
	}
	for _, tt := range tests {
		got, had := withoutCredentials(tt.in)
		if got != tt.want || had != tt.had {
			t.Errorf("withoutCredentials(%q) = %q, %v; want %q, %v", tt.in, got, had, tt.want, tt.had)
		}
	}
}

// TestNewCmdInit checks the flags and arguments, without doing the work.
func TestNewCmdInit(t *testing.T) {
	f := &Factory{IO: &IOStreams{Out: &strings.Builder{}, ErrOut: &strings.Builder{}}, Registry: builtin.Registry, Getenv: func(string) string { return "" }}
	var got *InitOptions
	cmd := NewCmdInit(f, func(o *InitOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--name", "shop", "../clones", "https://github.com/o/auth.git"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"../clones", "https://github.com/o/auth.git"}, got.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if got.Name != "shop" {
		t.Errorf("name = %q, want shop", got.Name)
	}
}

// TestSchemaCommand: release schema prints one JSON document.
func TestSchemaCommand(t *testing.T) {
	var out strings.Builder
	f := &Factory{IO: &IOStreams{Out: &out, ErrOut: &strings.Builder{}}, Registry: builtin.Registry, Getenv: func(string) string { return "" }}
	cmd := NewCmdRoot(f)
	cmd.SetArgs([]string{"schema"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(out.String()), &s); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if s["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v", s["$schema"])
	}
}
