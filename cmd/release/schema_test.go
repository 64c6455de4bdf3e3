package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/rogpeppe/go-internal/txtar"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/stages/builtin"
	"go.yaml.in/yaml/v3"

	gogit "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
)

// schemaCheck is a small JSON Schema validator: the keywords `release
// schema` uses, and nothing more. A keyword it does not know is an error,
// so the schema stays within what it checks, which is also what draft-07
// validators (yaml-language-server's) read the same way as 2020-12 ones.
type schemaCheck struct{ errs []string }

var schemaAnnotations = []string{"$schema", "$id", "title", "description", "examples"}

func (c *schemaCheck) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf("%s: %s", cmp.Or(path, "(root)"), fmt.Sprintf(format, args...)))
}

// valid reports whether v satisfies s, recording why not unless quiet.
func (c *schemaCheck) valid(s map[string]any, v any, path string) bool {
	before := len(c.errs)
	c.check(s, v, path)
	return len(c.errs) == before
}

func (c *schemaCheck) quietly(s map[string]any, v any, path string) bool {
	sub := &schemaCheck{}
	ok := sub.valid(s, v, path)
	for _, e := range sub.errs {
		if strings.Contains(e, "schema keyword") {
			c.errs = append(c.errs, e)
		}
	}
	return ok
}

func (c *schemaCheck) check(s map[string]any, v any, path string) {
	for k := range s {
		switch k {
		case "type", "const", "enum", "pattern", "minimum", "minItems", "minProperties", "items",
			"properties", "propertyNames", "additionalProperties", "required", "not", "allOf", "anyOf", "oneOf", "if", "then":
		default:
			if !slices.Contains(schemaAnnotations, k) {
				c.errorf(path, "schema keyword %q is not one the test validator knows", k)
			}
		}
	}
	if t, ok := s["type"]; ok && !schemaHasType(t, v) {
		c.errorf(path, "want %v, got %T", t, v)
		return
	}
	if want, ok := s["const"]; ok && fmt.Sprint(want) != fmt.Sprint(v) {
		c.errorf(path, "want %v, got %v", want, v)
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		c.errorf(path, "%v is not one of %v", v, enum)
	}
	if p, ok := s["pattern"].(string); ok {
		if str, isStr := v.(string); isStr && !regexp.MustCompile(p).MatchString(str) {
			c.errorf(path, "%q does not match %s", str, p)
		}
	}
	if m, ok := s["minimum"].(float64); ok {
		if n, isInt := v.(int); isInt && float64(n) < m {
			c.errorf(path, "%d is less than %v", n, m)
		}
	}
	if list, ok := v.([]any); ok {
		if m, ok := s["minItems"].(float64); ok && float64(len(list)) < m {
			c.errorf(path, "fewer than %v items", m)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, item := range list {
				c.check(items, item, fmt.Sprintf("%s.%d", path, i))
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		if m, ok := s["minProperties"].(float64); ok && float64(len(obj)) < m {
			c.errorf(path, "fewer than %v keys", m)
		}
		for _, r := range schemaList(s["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				c.errorf(path, "%s: required", r)
			}
		}
		props, _ := s["properties"].(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			at := schemaJoin(path, k)
			if names, ok := s["propertyNames"].(map[string]any); ok {
				c.check(names, k, at)
			}
			if sub, ok := props[k].(map[string]any); ok {
				c.check(sub, obj[k], at)
				continue
			}
			switch extra := s["additionalProperties"].(type) {
			case bool:
				if !extra {
					c.errorf(at, "unknown key %q", k)
				}
			case map[string]any:
				c.check(extra, obj[k], at)
			}
		}
	}
	for _, sub := range schemaList(s["allOf"]) {
		c.check(sub.(map[string]any), v, path)
	}
	if alts := schemaList(s["anyOf"]); alts != nil && !slices.ContainsFunc(alts, func(sub any) bool { return c.quietly(sub.(map[string]any), v, path) }) {
		c.errorf(path, "matches none of anyOf")
	}
	if one := schemaList(s["oneOf"]); one != nil {
		n := 0
		for _, sub := range one {
			if c.quietly(sub.(map[string]any), v, path) {
				n++
			}
		}
		if n != 1 {
			c.errorf(path, "matches %d of oneOf, want exactly 1", n)
		}
	}
	if not, ok := s["not"].(map[string]any); ok && c.quietly(not, v, path) {
		c.errorf(path, "matches what it must not: %v", not)
	}
	if cond, ok := s["if"].(map[string]any); ok && c.quietly(cond, v, path) {
		if then, ok := s["then"].(map[string]any); ok {
			c.check(then, v, path)
		}
	}
}

func schemaHasType(t, v any) bool {
	if list, ok := t.([]any); ok {
		return slices.ContainsFunc(list, func(t any) bool { return schemaHasType(t, v) })
	}
	switch v.(type) {
	case string:
		return t == "string"
	case int:
		return t == "integer" || t == "number"
	case float64:
		return t == "number"
	case bool:
		return t == "boolean"
	case map[string]any:
		return t == "object"
	case []any:
		return t == "array"
	case nil:
		return t == "null"
	}
	return false
}

func schemaList(v any) []any { l, _ := v.([]any); return l }

func schemaJoin(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// schemaJSON is the schema as `release schema` prints it.
func schemaJSON(t *testing.T) map[string]any {
	t.Helper()
	data, err := json.Marshal(pipeline.FileSchema(builtin.Registry()))
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// schemaErrors validates a pipeline file's content against the schema.
func schemaErrors(t *testing.T, schema map[string]any, data []byte) []string {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("parse: %v", err)
	}
	c := &schemaCheck{}
	c.check(schema, doc, "")
	return c.errs
}

func TestSchemaValidatesExample(t *testing.T) {
	data, err := os.ReadFile("../../pipeline.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if errs := schemaErrors(t, schemaJSON(t), data); len(errs) > 0 {
		t.Errorf("pipeline.example.yaml against the schema:\n%s", strings.Join(errs, "\n"))
	}
}

// TestSchemaValidatesInit: what release init writes passes the schema, with
// a service, a stub, and no GitHub remote (the notes stage commented out).
func TestSchemaValidatesInit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		origin string
	}{
		{"github", "https://github.com/sweepboard/api.git"},
		{"no github", "ssh://git@git.example.com/api.git"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			initTestClone(t, filepath.Join(dir, "clones", "api"), tt.origin, map[string]string{"Dockerfile": "FROM scratch\nEXPOSE 8080\n"})
			initTestClone(t, filepath.Join(dir, "clones", "web"), "", map[string]string{"README": "web\n"})
			out := filepath.Join(dir, "pipeline.yaml")
			f := &Factory{IO: &IOStreams{Out: &strings.Builder{}, ErrOut: &strings.Builder{}}, Registry: builtin.Registry, Getenv: func(string) string { return "" }, File: out}
			if err := initRun(&InitOptions{f: f, Args: []string{filepath.Join(dir, "clones"), "https://github.com/sweepboard/auth.git"}}); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if errs := schemaErrors(t, schemaJSON(t), data); len(errs) > 0 {
				t.Errorf("init's file against the schema:\n%s\n%s", strings.Join(errs, "\n"), data)
			}
		})
	}
}

// initTestClone makes a Git repository at dir with one commit of files, on main,
// with origin as its origin remote unless it is "".
func initTestClone(t *testing.T, dir, origin string, files map[string]string) {
	t.Helper()
	r, err := gogit.PlainInitWithOptions(dir, &gogit.PlainInitOptions{InitOptions: gogit.InitOptions{DefaultBranch: "refs/heads/main"}})
	if err != nil {
		t.Fatal(err)
	}
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Add(name); err != nil {
			t.Fatal(err)
		}
	}
	sig := &object.Signature{Name: "t", Email: "t@example.com", When: time.Unix(1_700_000_000, 0)}
	if _, err := wt.Commit("init", &gogit.CommitOptions{Author: sig, Committer: sig}); err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		if _, err := r.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{origin}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSchemaAcceptsWhatLoads: every pipeline file of the command's test
// scripts that the loader accepts, the schema accepts too; the schema is
// no stricter than the loader.
func TestSchemaAcceptsWhatLoads(t *testing.T) {
	schema := schemaJSON(t)
	archives, err := filepath.Glob("testdata/script/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range archives {
		a, err := txtar.ParseFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range a.Files {
			if !strings.HasSuffix(f.Name, ".yaml") || strings.Contains(f.Name, "/") {
				continue
			}
			if _, err := pipeline.Parse(f.Name, "/p/"+f.Name, f.Data, builtin.Registry()); err != nil {
				continue
			}
			checked++
			if errs := schemaErrors(t, schema, f.Data); len(errs) > 0 {
				t.Errorf("%s: %s loads, the schema refuses it:\n%s", name, f.Name, strings.Join(errs, "\n"))
			}
		}
	}
	if checked < 10 {
		t.Errorf("checked %d files; the test scripts moved?", checked)
	}
}

// TestSchemaRefuses: files the loader refuses for a reason the schema can
// see, the schema refuses too, naming the place.
func TestSchemaRefuses(t *testing.T) {
	base := "name: demo\n"
	tests := []struct {
		name, src, want string
	}{
		{"unknown key", "colour: blue\nstages: {a: {uses: approval}}\n", `colour: unknown key "colour"`},
		{"unknown key in a service", "repos: {api: {url: ./api}}\nservices: {api: {repo: api, image: demo/api, ports: [80]}}\nstages: {a: {uses: approval}}\n", `services.api.ports: unknown key`},
		{"bump", "version: {bump: huge}\nstages: {a: {uses: approval}}\n", `version.bump: huge is not one of`},
		{"approval", "environments: {prod: {approval: yes please}}\nstages: {a: {uses: approval}}\n", `environments.prod.approval: yes please is not one of`},
		{"uses", "stages: {a: {uses: exce}}\n", `stages.a.uses: exce is not one of`},
		{"with of another kind", "stages: {a: {uses: deploy, with: {command: [x]}}}\n", `stages.a.with.command: unknown key`},
		{"with of a kind without settings", "stages: {a: {uses: approval, with: {timeout: 1s}}}\n", `stages.a.with.timeout: unknown key`},
		{"exec without a command", "stages: {a: {uses: exec, with: {dir: .}}}\n", `stages.a.with: command: required`},
		{"duration", "stages: {a: {uses: approval, timeout: 30}}\n", `stages.a.timeout: want string`},
		{"negative duration", "stages: {a: {uses: approval, timeout: -1s}}\n", `stages.a.timeout: "-1s" does not match`},
		{"branch", "repos: {api: {url: ./api, branch: -x}}\nstages: {a: {uses: approval}}\n", `repos.api.branch: "-x" does not match`},
		{"branch with ..", "repos: {api: {url: ./api, branch: a..b}}\nstages: {a: {uses: approval}}\n", `repos.api.branch: matches what it must not`},
		{"stage name", "stages: {'a[1]': {uses: approval}}\n", `stages.a[1]: "a[1]" does not match`},
		{"no stages", "stages: {}\n", `stages: fewer than 1 keys`},
		{"context outside", "repos: {api: {url: ./api}}\nservices: {api: {repo: api, image: demo/api, context: ../x}}\nstages: {a: {uses: approval}}\n", `services.api.context: matches what it must not`},
		{"freeze both ways", "environments: {prod: {}}\nfreeze: {f: {environments: [prod], weekly: {from: 'Fri 16:00', to: 'Mon 08:00'}, from: '2026-12-23 00:00', to: '2027-01-02 08:00'}}\nstages: {a: {uses: approval}}\n", `freeze.f: matches 0 of oneOf`},
		{"retry", "stages: {a: {uses: approval, retry: {attempts: -1}}}\n", `stages.a.retry.attempts: -1 is less than 0`},
	}
	schema := schemaJSON(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := base + tt.src
			if _, err := pipeline.Parse("pipeline.yaml", "/p/pipeline.yaml", []byte(src), builtin.Registry()); err == nil {
				t.Fatalf("the loader accepts it; the case tests nothing:\n%s", src)
			}
			errs := schemaErrors(t, schema, []byte(src))
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tt.want) }) {
				t.Errorf("schema errors %q, want one containing %q", errs, tt.want)
			}
		})
	}
}
