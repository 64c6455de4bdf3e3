package dag_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline/dag"
)

func build(t *testing.T, nodes ...dag.Node) *dag.Graph {
	t.Helper()
	g, err := dag.Build(nodes)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func n(name string, needs ...string) dag.Node { return dag.Node{Name: name, Needs: needs} }

func TestOrder(t *testing.T) {
	tests := []struct {
		name  string
		nodes []dag.Node
		want  []string
	}{
		{
			// b   a
			//  \ /
			//   c
			name:  "join",
			nodes: []dag.Node{n("c", "b", "a"), n("b"), n("a")},
			want:  []string{"a", "b", "c"},
		},
		{
			//   a
			//  / \
			// c   b
			//  \ /
			//   d
			name:  "diamond",
			nodes: []dag.Node{n("d", "b", "c"), n("c", "a"), n("b", "a"), n("a")},
			want:  []string{"a", "b", "c", "d"},
		},
		{
			// z → y → x   a
			name:  "chain beside a single node: ties broken by name",
			nodes: []dag.Node{n("x", "y"), n("y", "z"), n("z"), n("a")},
			want:  []string{"a", "z", "y", "x"},
		},
		{
			name:  "duplicate needs collapse",
			nodes: []dag.Node{n("b", "a", "a"), n("a")},
			want:  []string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := build(t, tt.nodes...).Order()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name  string
		nodes []dag.Node
		want  string
	}{
		{"duplicate", []dag.Node{n("a"), n("a")}, `duplicate node "a"`},
		{"unknown", []dag.Node{n("a", "ghost")}, `"a" needs unknown node "ghost"`},
		{"self", []dag.Node{n("a", "a")}, "cycle: a → a"},
		// a → b → c → a, with d hanging off the cycle
		{"three", []dag.Node{n("a", "c"), n("b", "a"), n("c", "b"), n("d", "c")}, "cycle: a → c → b → a"},
		{"unknown before cycle", []dag.Node{n("a", "b"), n("b", "a", "zz")}, `"b" needs unknown node "zz"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dag.Build(tt.nodes)
			if err == nil {
				t.Fatal("Build succeeded, want an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCycleErrorType(t *testing.T) {
	_, err := dag.Build([]dag.Node{n("a", "b"), n("b", "a")})
	var ce *dag.CycleError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *CycleError", err)
	}
	if diff := cmp.Diff([]string{"a", "b", "a"}, ce.Path); diff != "" {
		t.Errorf("path (-want +got):\n%s", diff)
	}
}

func TestReady(t *testing.T) {
	// build[api]   build[web]
	//     |            |
	// push[api]    push[web]
	//      \        /
	//       deploy
	g := build(t,
		n("build[api]"), n("build[web]"),
		n("push[api]", "build[api]"), n("push[web]", "build[web]"),
		n("deploy", "push[api]", "push[web]"),
	)
	tests := []struct {
		name string
		done []string
		want []string
	}{
		{"start", nil, []string{"build[api]", "build[web]"}},
		{"one service ahead", []string{"build[api]"}, []string{"build[web]", "push[api]"}},
		{"join waits for both", []string{"build[api]", "build[web]", "push[api]"}, []string{"push[web]"}},
		{"all but last", []string{"build[api]", "build[web]", "push[api]", "push[web]"}, []string{"deploy"}},
		{"all", []string{"build[api]", "build[web]", "push[api]", "push[web]", "deploy"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := map[string]bool{}
			for _, d := range tt.done {
				done[d] = true
			}
			got := g.Ready(func(s string) bool { return done[s] })
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ready (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDownstream(t *testing.T) {
	// a → b → c
	//  \
	//   d     e
	g := build(t, n("a"), n("b", "a"), n("c", "b"), n("d", "a"), n("e"))
	if diff := cmp.Diff([]string{"b", "c", "d"}, g.Downstream("a")); diff != "" {
		t.Errorf("downstream of a (-want +got):\n%s", diff)
	}
	if got := g.Downstream("e"); len(got) != 0 {
		t.Errorf("downstream of e = %v, want none", got)
	}
}

func TestUsersAndIndex(t *testing.T) {
	// a → b, a → c, b → d
	g := build(t, n("d", "b"), n("c", "a"), n("b", "a"), n("a"))
	if diff := cmp.Diff([]string{"b", "c"}, g.Users("a")); diff != "" {
		t.Errorf("users of a (-want +got):\n%s", diff)
	}
	if g.Index("a") != 0 || g.Index("d") != 3 || g.Index("zz") != -1 {
		t.Errorf("index a=%d d=%d zz=%d, want 0 3 -1", g.Index("a"), g.Index("d"), g.Index("zz"))
	}
}
