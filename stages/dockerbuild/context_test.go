package dockerbuild

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIgnore(t *testing.T) {
	tests := []struct {
		name     string
		patterns string
		paths    map[string]bool // path -> excluded
	}{
		{
			name:     "directory excludes its contents",
			patterns: "notes\n",
			paths:    map[string]bool{"notes/a.txt": true, "notes/deep/b": true, "notesx": false, "sub/notes/a": false},
		},
		{
			name:     "star stays in one element",
			patterns: "*.md\n",
			paths:    map[string]bool{"README.md": true, "docs/a.md": false, "a.mdx": false},
		},
		{
			name:     "double star spans elements",
			patterns: "**/*.md\n",
			paths:    map[string]bool{"README.md": true, "docs/a.md": true, "docs/x/y.md": true, "a.go": false},
		},
		{
			name:     "last match wins, exceptions re-include",
			patterns: "# comment\n*.log\n!important.log\n",
			paths:    map[string]bool{"a.log": true, "important.log": false, "main.go": false},
		},
		{
			name:     "exception inside an excluded directory",
			patterns: "bin\n!bin/api\n",
			paths:    map[string]bool{"bin/api": false, "bin/other": true},
		},
		{
			name:     "leading slash and dot segments are cleaned",
			patterns: "/tmp/./x\n",
			paths:    map[string]bool{"tmp/x": true, "tmp/y": false},
		},
		{
			name:     "question mark and class",
			patterns: "file?.txt\n[ab].c\n",
			paths:    map[string]bool{"file1.txt": true, "file12.txt": false, "a.c": true, "c.c": false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ig, err := parseIgnore(strings.NewReader(tt.patterns))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for p := range tt.paths {
				got[p] = ig.excluded(p)
			}
			if diff := cmp.Diff(tt.paths, got); diff != "" {
				t.Errorf("excluded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		path    string
		wantErr string
	}{
		{path: ""},
		{path: "."},
		{path: "services/api"},
		{path: "./a/b"},
		{path: "..", wantErr: `context ".." leaves the repo with ".."`},
		{path: "../other", wantErr: `context "../other" leaves the repo`},
		{path: "a/../../b", wantErr: "leaves the repo"},
		{path: "a/..", wantErr: "leaves the repo"},
		{path: "/etc", wantErr: `context "/etc" is absolute`},
		{path: `C:\x`, wantErr: "is absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			err := checkPath("context", tt.path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkPath(%q) = %v, want nil", tt.path, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkPath(%q) = %v, want an error with %q", tt.path, err, tt.wantErr)
			}
		})
	}
}

func TestCheckLink(t *testing.T) {
	links := map[string]string{
		"ok":           "file.txt",
		"sub/ok":       "../file.txt",
		"sub/up":       "..",
		"sub/deep/dot": "../../sub",
		"up":           "../file.txt",
		"abs":          "/etc/passwd",
		"via":          "sub/up/..",
		"viaok":        "sub/up/file.txt",
		"loop1":        "loop2",
		"loop2":        "loop1",
		"throughdot":   "sub/deep/dot/../..",
	}
	tests := []struct {
		name    string
		wantErr string
	}{
		{name: "ok"},
		{name: "sub/ok"},
		{name: "sub/up"},
		{name: "sub/deep/dot"},
		{name: "viaok"},
		{name: "up", wantErr: "symlink up -> ../file.txt points outside the build context (climbs above the context root)"},
		{name: "abs", wantErr: "symlink abs -> /etc/passwd points outside the build context (absolute target /etc/passwd)"},
		{name: "via", wantErr: "symlink via -> sub/up/.. points outside"},
		{name: "loop1", wantErr: "too many levels of symlinks"},
		{name: "throughdot", wantErr: "symlink throughdot -> sub/deep/dot/../.. points outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkLink(links, tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkLink(%s) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkLink(%s) = %v, want an error with %q", tt.name, err, tt.wantErr)
			}
		})
	}
}
