package pipeline

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Pos is a place in a file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Error is a problem at a place in the pipeline file.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Errors is every problem found in a pipeline file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i].Pos, es[j].Pos
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// The decoder visits every value once per path that reaches it, so an alias
// stands for a copy of what it names. These bound the values one decode
// visits, so that a file costs time and memory in proportion to its size
// and an alias bomb ("billion laughs") is refused early: maxNodes in all,
// maxAliasNodes of them reached through aliases. A pipeline file that shares
// a block with anchors needs hundreds.
const (
	maxNodes      = 1 << 18
	maxAliasNodes = 10_000
)

// A decoder fills Go values from YAML nodes strictly: unknown keys, duplicate
// keys and values of the wrong shape are errors, all of them collected with
// their positions. It records the position of every path it visits
// ("stages.push.needs.0") so later checks can point at the place too.
type decoder struct {
	file    string
	errs    Errors
	pos     map[string]Pos
	visited int
	aliased int        // values visited through an alias
	alias   *yaml.Node // the outermost alias being expanded, if any
	full    bool       // a bound was hit: decode no more
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: map[string]Pos{}}
}

func (d *decoder) at(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Col: n.Column} }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &Error{Pos: d.at(n), Msg: fmt.Sprintf(format, args...)})
}

// posOf returns the recorded position of a path, or of its nearest recorded
// parent.
func (d *decoder) posOf(path ...string) Pos {
	for i := len(path); i >= 0; i-- {
		if p, ok := d.pos[strings.Join(path[:i], ".")]; ok {
			return p
		}
	}
	return Pos{File: d.file, Line: 1, Col: 1}
}

func (d *decoder) errorAt(p Pos, format string, args ...any) {
	d.errs = append(d.errs, &Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	nodeType     = reflect.TypeFor[yaml.Node]()
)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode fills v (settable) from n. name says what v is, for messages.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.full {
		return
	}
	d.visited++
	if d.alias != nil {
		d.aliased++
	}
	switch {
	case d.aliased > maxAliasNodes:
		d.full = true
		d.errorf(d.alias, "aliases expand to more than %d values (*%s here); a pipeline file may share blocks with anchors, not multiply them", maxAliasNodes, d.alias.Value)
		return
	case d.visited > maxNodes:
		d.full = true
		d.errorf(n, "more than %d values in the file", maxNodes)
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		if d.alias == nil {
			d.alias = n
			defer func() { d.alias = nil }()
		}
		d.decode(n.Alias, v, path)
		return
	}
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = d.at(n)
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // leave the zero value
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, "%s: want a list, got %s", describe(path), kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if d.full {
				break
			}
			d.decode(c, s.Index(i), join(path, strconv.Itoa(i)))
		}
		v.Set(s)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s: want a %s, got %s", describe(path), typeName(v.Type()), kindName(n))
		return
	}
	if v.Type() == durationType {
		dur, err := time.ParseDuration(n.Value)
		if err != nil || dur < 0 {
			d.errorf(n, "%s: %q is not a duration like 30s or 2m", describe(path), n.Value)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	if v.Kind() == reflect.String && n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!bool" {
		d.errorf(n, "%s: want a string, got %s", describe(path), n.Tag)
		return
	}
	if v.Kind() == reflect.String {
		v.SetString(n.Value) // numbers and booleans are fine as strings
		return
	}
	p := reflect.New(v.Type())
	if err := n.Decode(p.Interface()); err != nil {
		d.errorf(n, "%s: want a %s, got %q", describe(path), typeName(v.Type()), n.Value)
		return
	}
	v.Set(p.Elem())
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping, got %s", describe(path), kindName(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content) && !d.full; i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !d.checkKey(k, seen) {
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		d.pos[join(path, k.Value)] = d.keyOrValue(k, val)
		d.decode(val, e, join(path, k.Value))
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	}
}

// keyOrValue is where messages about a key's value point: at a plain value
// itself, or at the key of a mapping or list.
func (d *decoder) keyOrValue(k, val *yaml.Node) Pos {
	if val.Kind == yaml.ScalarNode {
		return d.at(val)
	}
	return d.at(k)
}

// checkKey reports duplicate and non-string keys; it returns false for a key
// whose value must not be decoded.
func (d *decoder) checkKey(k *yaml.Node, seen map[string]*yaml.Node) bool {
	if k.Kind != yaml.ScalarNode {
		d.errorf(k, "a key must be a plain string")
		return false
	}
	if first, dup := seen[k.Value]; dup {
		d.errorf(k, "duplicate key %q (first at line %d)", k.Value, first.Line)
		return false
	}
	seen[k.Value] = k
	return true
}

// fields returns the yaml-tagged fields of a struct type by key, inline
// structs flattened.
func fields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if opts == "inline" {
			for k, idx := range fields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = []int{i}
	}
	return out
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping, got %s", describe(path), kindName(n))
		return
	}
	fs := fields(v.Type())
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content) && !d.full; i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !d.checkKey(k, seen) {
			continue
		}
		idx, ok := fs[k.Value]
		if !ok {
			known := make([]string, 0, len(fs))
			for name := range fs {
				known = append(known, name)
			}
			slices.Sort(known)
			d.errorf(k, "unknown key %q in %s (known: %s)", k.Value, describe(path), strings.Join(known, ", "))
			continue
		}
		d.pos[join(path, k.Value)] = d.keyOrValue(k, val)
		d.decode(val, v.FieldByIndex(idx), join(path, k.Value))
	}
}

// describe names a path for a message: "stages.push.needs" → "stages.push.needs".
func describe(path string) string {
	if path == "" {
		return "the pipeline file"
	}
	return path
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.Float64:
		return "number"
	}
	return t.Kind().String()
}
