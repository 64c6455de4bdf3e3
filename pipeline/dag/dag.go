// Package dag is the graph of a pipeline: node names and the edges between
// them, nothing else. It is pure: no goroutines, no I/O, and every answer
// comes in a deterministic order, so a run resumed from stored state asks the
// same questions and gets the same answers.
package dag

import (
	"fmt"
	"slices"
	"strings"
)

// Node is a name and the names it needs.
type Node struct {
	Name  string
	Needs []string
}

// Graph is a validated, acyclic graph.
type Graph struct {
	order []string            // topological, ties broken by name
	needs map[string][]string // sorted
	users map[string][]string // the reverse edges, in graph order
	index map[string]int      // position in order
}

// DuplicateError reports a name given to two nodes.
type DuplicateError struct{ Name string }

func (e *DuplicateError) Error() string { return fmt.Sprintf("duplicate node %q", e.Name) }

// CycleError reports a cycle, in order, with the first node repeated at the
// end: a → b → c → a.
type CycleError struct{ Path []string }

func (e *CycleError) Error() string {
	return "cycle: " + strings.Join(e.Path, " → ")
}

// UnknownError reports a need that names no node.
type UnknownError struct{ Node, Need string }

func (e *UnknownError) Error() string {
	return fmt.Sprintf("%q needs unknown node %q", e.Node, e.Need)
}

// Build checks duplicates, then unknown references, then cycles, and returns
// the graph. Its error is a *DuplicateError, *UnknownError or *CycleError.
func Build(nodes []Node) (*Graph, error) {
	needs := make(map[string][]string, len(nodes))
	for _, n := range nodes {
		if _, dup := needs[n.Name]; dup {
			return nil, &DuplicateError{Name: n.Name}
		}
		ns := slices.Clone(n.Needs)
		slices.Sort(ns)
		needs[n.Name] = slices.Compact(ns)
	}
	names := make([]string, 0, len(needs))
	for n := range needs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, m := range needs[n] {
			if _, ok := needs[m]; !ok {
				return nil, &UnknownError{Node: n, Need: m}
			}
		}
	}
	if c := FindCycle(names, func(n string) []string { return needs[n] }); c != nil {
		return nil, &CycleError{Path: c}
	}
	g := &Graph{needs: needs, index: make(map[string]int, len(names))}
	g.order = topo(names, needs)
	g.users = make(map[string][]string, len(names))
	for i, n := range g.order {
		g.index[n] = i
		for _, m := range needs[n] {
			g.users[m] = append(g.users[m], n)
		}
	}
	return g, nil
}

// FindCycle returns the first cycle found by a depth-first walk of names in
// the given order, as a path whose first and last elements are the same, or
// nil. Edges to names outside the walk are ignored.
func FindCycle(names []string, edges func(string) []string) []string {
	const (
		unseen = iota
		onPath
		done
	)
	state := make(map[string]int, len(names))
	known := make(map[string]bool, len(names))
	for _, n := range names {
		known[n] = true
	}
	var path []string
	var cycle []string
	var visit func(string) bool
	visit = func(n string) bool {
		state[n] = onPath
		path = append(path, n)
		for _, m := range edges(n) {
			if !known[m] {
				continue
			}
			switch state[m] {
			case onPath:
				i := slices.Index(path, m)
				cycle = append(slices.Clone(path[i:]), m)
				return true
			case unseen:
				if visit(m) {
					return true
				}
			}
		}
		path = path[:len(path)-1]
		state[n] = done
		return false
	}
	for _, n := range names {
		if state[n] == unseen && visit(n) {
			return cycle
		}
	}
	return nil
}

// topo orders nodes so that each comes after everything it needs; among the
// nodes available at each step the smallest name goes first.
func topo(names []string, needs map[string][]string) []string {
	indeg := make(map[string]int, len(names))
	users := make(map[string][]string, len(names))
	for _, n := range names {
		indeg[n] = len(needs[n])
		for _, m := range needs[n] {
			users[m] = append(users[m], n)
		}
	}
	var ready []string
	for _, n := range names {
		if indeg[n] == 0 {
			ready = append(ready, n)
		}
	}
	order := make([]string, 0, len(names))
	for len(ready) > 0 {
		n := ready[0]
		ready = ready[1:]
		order = append(order, n)
		added := false
		for _, u := range users[n] {
			indeg[u]--
			if indeg[u] == 0 {
				ready = append(ready, u)
				added = true
			}
		}
		if added {
			slices.Sort(ready)
		}
	}
	return order
}

// Order returns every node, each after the nodes it needs.
func (g *Graph) Order() []string { return slices.Clone(g.order) }

// Needs returns the direct dependencies of a node, sorted.
func (g *Graph) Needs(name string) []string { return slices.Clone(g.needs[name]) }

// Len is the number of nodes.
func (g *Graph) Len() int { return len(g.order) }

// Has reports whether name is a node.
func (g *Graph) Has(name string) bool { _, ok := g.index[name]; return ok }

// Ready returns the nodes that are not done and whose needs are all done, in
// graph order. done is the set of finished nodes that downstream nodes may
// build on (in practice: succeeded).
func (g *Graph) Ready(done func(string) bool) []string {
	var ready []string
	for _, n := range g.order {
		if done(n) {
			continue
		}
		ok := true
		for _, m := range g.needs[n] {
			if !done(m) {
				ok = false
				break
			}
		}
		if ok {
			ready = append(ready, n)
		}
	}
	return ready
}

// Users returns the nodes that directly need name, in graph order.
func (g *Graph) Users(name string) []string { return slices.Clone(g.users[name]) }

// Index is the position of name in Order, or -1.
func (g *Graph) Index(name string) int {
	if i, ok := g.index[name]; ok {
		return i
	}
	return -1
}

// Downstream returns every node that transitively needs name, in graph order.
func (g *Graph) Downstream(name string) []string {
	hit := map[string]bool{name: true}
	var out []string
	for _, n := range g.order[g.index[name]+1:] {
		for _, m := range g.needs[n] {
			if hit[m] {
				hit[n] = true
				out = append(out, n)
				break
			}
		}
	}
	return out
}
