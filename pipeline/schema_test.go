package pipeline

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/builtin"
	"github.com/sweepboard/release/stages/dockerbuild"
	"go.yaml.in/yaml/v3"
)

// printedSchema is the schema as `release schema` prints it, read back as
// plain JSON values: the tests look at what a user gets.
func printedSchema(t *testing.T) map[string]any {
	t.Helper()
	data, err := json.Marshal(FileSchema(builtin.Registry()))
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// modelKeys are the keys the loader accepts, walked the way the decoder
// walks them: the yaml-tagged fields of the file's types (fields, the
// decoder's own list), "*" for any key of a map, and for each registered
// stage kind its `with:` struct as "stages.*.with(KIND).key".
func modelKeys(reg *stages.Registry) []string {
	var keys []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		switch {
		case t == durationType || t == nodeType:
		case t.Kind() == reflect.Map:
			walk(t.Elem(), join(path, "*"))
		case t.Kind() == reflect.Struct:
			for key, idx := range fields(t) {
				keys = append(keys, join(path, key))
				walk(t.FieldByIndex(idx).Type, join(path, key))
			}
		}
	}
	walk(reflect.TypeFor[file](), "")
	for _, kind := range reg.Names() {
		k, _ := reg.Lookup(kind)
		walk(reflect.TypeOf(k.New()), "stages.*.with("+kind+")")
	}
	slices.Sort(keys)
	return keys
}

// schemaKeysOf are the keys a printed schema describes, in the notation of
// modelKeys; visit sees each key's schema.
func schemaKeysOf(s map[string]any, visit func(path string, s map[string]any)) []string {
	var keys []string
	var walk func(s map[string]any, path string)
	walk = func(s map[string]any, path string) {
		if props, ok := s["properties"].(map[string]any); ok {
			for key, sub := range props {
				keys = append(keys, join(path, key))
				if visit != nil {
					visit(join(path, key), sub.(map[string]any))
				}
				walk(sub.(map[string]any), join(path, key))
			}
		}
		if sub, ok := s["additionalProperties"].(map[string]any); ok {
			walk(sub, join(path, "*"))
		}
		if sub, ok := s["items"].(map[string]any); ok {
			walk(sub, path)
		}
		for _, c := range asList(s["allOf"]) {
			cond, _ := c.(map[string]any)
			kind := dig(cond, "if", "properties", "uses", "const")
			with, _ := dig(cond, "then", "properties", "with").(map[string]any)
			if kind == nil || with == nil {
				continue
			}
			walk(with, join(path, fmt.Sprintf("with(%s)", kind)))
		}
	}
	walk(s, "")
	slices.Sort(keys)
	return keys
}

func asList(v any) []any { l, _ := v.([]any); return l }

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestSchemaKeys: every key the loader accepts is in the schema, and
// nothing else.
func TestSchemaKeys(t *testing.T) {
	reg := builtin.Registry()
	want := modelKeys(reg)
	got := schemaKeysOf(printedSchema(t), nil)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema keys (-loader's model +schema):\n%s", diff)
	}
	if !slices.Contains(want, "stages.*.with(deploy).drain") || !slices.Contains(want, "services.*.health.timeout") {
		t.Fatalf("the model walk missed keys: %v", want)
	}
}

// TestSchemaKeysLoad puts every key of the schema in a file and checks
// that the loader knows it: the schema names no key the loader rejects.
func TestSchemaKeysLoad(t *testing.T) {
	for _, key := range schemaKeysOf(printedSchema(t), nil) {
		doc := map[string]any{}
		at := doc
		parts := strings.Split(key, ".")
		for i, p := range parts {
			if i == len(parts)-1 {
				at[p] = nil
				break
			}
			if kind, ok := strings.CutPrefix(p, "with("); ok {
				at["uses"] = strings.TrimSuffix(kind, ")")
				p = "with"
			}
			if p == "*" {
				p = "x"
			}
			next := map[string]any{}
			at[p] = next
			at = next
		}
		data, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse("pipeline.yaml", "/p/pipeline.yaml", data, builtin.Registry())
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%s: the loader refuses it:\n%s\n%v", key, data, err)
		}
	}
}

// TestSchemaDescribed: every key says what it is for, so an editor can
// show it.
func TestSchemaDescribed(t *testing.T) {
	schemaKeysOf(printedSchema(t), func(path string, s map[string]any) {
		if d, _ := s["description"].(string); d == "" {
			t.Errorf("%s has no description: add one to schemaKeys in pipeline/schema.go", path)
		}
	})
}

// TestSchemaKeysKnown: schemaKeys says nothing about a key the model no
// longer has.
func TestSchemaKeysKnown(t *testing.T) {
	reg := builtin.Registry()
	keys := modelKeys(reg)
	for path := range schemaKeys {
		key := path
		if rest, ok := strings.CutPrefix(path, "with."); ok {
			kind, field, _ := strings.Cut(rest, ".")
			if _, err := reg.Lookup(kind); err != nil {
				t.Errorf("schemaKeys[%q]: %v", path, err)
				continue
			}
			key = join("stages.*.with("+kind+")", field)
			if field == "" {
				continue
			}
		}
		if parent, ok := strings.CutSuffix(key, ".*"); ok {
			key = parent // a map's entries
		}
		key = strings.ReplaceAll(key, "[]", "") // a list's items: modelKeys walks through lists
		if key != "" && !slices.Contains(keys, key) {
			t.Errorf("schemaKeys[%q]: the loader has no such key", path)
		}
	}
}

// TestSchemaEnums checks each enum of the schema against the loader: every
// value loads, a value outside is refused with the key named.
func TestSchemaEnums(t *testing.T) {
	// A document template per enum, %s the value; a template without a
	// stage gets a plain one.
	docs := map[string]string{
		"version.bump":                        "version: {bump: %s}\n",
		"environments.*.approval":             "environments: {prod: {approval: %s}}\n",
		"environments.*.target":               "environments: {prod: {target: %s}}\n",
		"schedules.*.bump":                    "schedules: {weekly: {cron: '@weekly', bump: %s}}\n",
		"stages.*.for_each":                   "stages: {s: {uses: exec, for_each: %s, with: {command: ['true']}}}\n",
		"stages.*.uses":                       "registry: {url: 127.0.0.1:5000}\ngithub: {owner: o}\nstages: {s: {uses: %s, with: {}}}\n",
		"stages.*.with(docker-build).builder": "stages: {s: {uses: docker-build, with: {builder: %s}}}\n",
	}
	base := "name: demo\nrepos: {api: {url: ./api}}\nservices: {api: {repo: api, image: demo/api}}\n"
	stage := "stages: {s: {uses: exec, with: {command: ['true']}}}\n"

	var seen []string
	schemaKeysOf(printedSchema(t), func(path string, s map[string]any) {
		enum := asList(s["enum"])
		if enum == nil {
			return
		}
		seen = append(seen, path)
		tmpl, ok := docs[path]
		if !ok {
			t.Errorf("%s: an enum with no case in TestSchemaEnums", path)
			return
		}
		load := func(v string) error {
			src := base + fmt.Sprintf(tmpl, v)
			if !strings.Contains(tmpl, "stages:") {
				src += stage
			}
			_, err := Parse("pipeline.yaml", "/p/pipeline.yaml", []byte(src), builtin.Registry())
			return err
		}
		for _, v := range enum {
			if v == "exec" || v == "docker-run" || v == "docker-exec" {
				continue // needs a command: covered by the other stages
			}
			if err := load(v.(string)); err != nil {
				t.Errorf("%s: %q is in the schema's enum, the loader refuses it: %v", path, v, err)
			}
		}
		if err := load("bogus"); err == nil {
			t.Errorf("%s: the loader takes %q, outside the schema's enum %v", path, "bogus", enum)
		}
	})
	if want := []string{dockerbuild.BuilderBuildKit, dockerbuild.BuilderClassic}; !slices.Equal(want, schemaEnum(t, "stages.*.with(docker-build).builder")) {
		t.Errorf("docker-build builders: want %v", want)
	}
	slices.Sort(seen)
	wantSeen := make([]string, 0, len(docs))
	for k := range docs {
		wantSeen = append(wantSeen, k)
	}
	slices.Sort(wantSeen)
	if diff := cmp.Diff(wantSeen, seen); diff != "" {
		t.Errorf("enums (-test cases +schema):\n%s", diff)
	}
}

func schemaEnum(t *testing.T, key string) []string {
	var out []string
	schemaKeysOf(printedSchema(t), func(path string, s map[string]any) {
		if path == key {
			for _, v := range asList(s["enum"]) {
				out = append(out, v.(string))
			}
		}
	})
	return out
}

// TestSchemaPatterns compares each pattern with the loader's own check,
// value by value. The patterns are compiled by Go's RE2 here; they use
// only what ECMA-262 (an editor's regex engine) reads the same way.
func TestSchemaPatterns(t *testing.T) {
	branch := func(s string) bool {
		return regexp.MustCompile(branchPattern).MatchString(s) && !regexp.MustCompile(branchRefused).MatchString(s)
	}
	tests := []struct {
		name    string
		pattern func(string) bool
		loader  func(string) bool
		values  []string
	}{
		{
			name:    "branch",
			pattern: branch,
			loader:  func(s string) bool { return checkBranch(s) == nil },
			values: []string{
				"main", "release/2.x", "feature/-dash", "v1.2", "a", "x@y", "café",
				"-x", "@", "/a", "a/", "a//b", "a.", "a..b", "a@{b", "a b", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", `a\b`,
				"a\tb", "a\x7fb", ".a", "a/.b", "a.lock", "a.lock/b", "a/b.lock", "a.locked",
			},
		},
		{
			name:    "duration",
			pattern: regexp.MustCompile(durationPattern).MatchString,
			loader: func(s string) bool {
				d, err := time.ParseDuration(s)
				return err == nil && d >= 0
			},
			values: []string{"30s", "2m", "1h30m", "1.5s", ".5s", "500ms", "10us", "10µs", "0", "+3s", "", "30", "-1s", "1d", "s", "1.s", "1h-2m"},
		},
		{
			name:    "cron",
			pattern: regexp.MustCompile(cronPattern).MatchString,
			loader:  func(s string) bool { return checkCron(s) == nil },
			values:  []string{"0 9 * * MON", "*/5 * * * *", " 0 9 * * 1 ", "@weekly", "@every 1h", "0 9 * *", "", "0 9 * * * *"},
		},
		{
			name:    "weekly",
			pattern: regexp.MustCompile(weekTime).MatchString,
			loader:  func(s string) bool { _, err := parseWeekTime(s); return err == nil },
			values:  []string{"Fri 16:00", "mon 8:00", "SUN 00:00", " Sat  23:59 ", "Fri", "Friday 16:00", "Fri 16", "16:00", "", "Fri 24:00", "Fri 16:60", "Fri 1:5"},
		},
		{
			name:    "date",
			pattern: regexp.MustCompile(dateTime).MatchString,
			loader:  func(s string) bool { _, err := time.Parse(dateLayout, s); return err == nil },
			values:  []string{"2026-12-23 00:00", "2027-01-02 08:00", "2026-12-23", "2026-12-23T00:00", "26-12-23 00:00", ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range tt.values {
				if got, want := tt.pattern(v), tt.loader(v); got != want {
					t.Errorf("%q: schema says %v, loader says %v", v, got, want)
				}
			}
		})
	}
}
