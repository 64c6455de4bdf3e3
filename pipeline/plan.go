package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/sweepboard/release/pipeline/dag"
)

// PlanNode is one node of an expanded pipeline: a stage, or one item of a
// stage that fans out.
type PlanNode struct {
	ID          string   `json:"id"`    // "push[api]", or the stage name
	Stage       string   `json:"stage"` // "push"
	Uses        string   `json:"uses"`
	Item        string   `json:"item,omitempty"` // "api"
	Environment string   `json:"environment,omitempty"`
	Needs       []string `json:"needs"`
}

// Plan is the DAG of nodes a run executes.
type Plan struct {
	Nodes []PlanNode // in graph order
	Graph *dag.Graph
	byID  map[string]int
}

// Node returns the node with the given id.
func (p *Plan) Node(id string) (PlanNode, bool) {
	i, ok := p.byID[id]
	if !ok {
		return PlanNode{}, false
	}
	return p.Nodes[i], true
}

// Hash identifies the shape of the plan: node ids, kinds and edges. A run
// refuses to resume when the pipeline file now gives another hash.
func (p *Plan) Hash() string {
	h := sha256.New()
	for _, n := range p.Nodes {
		fmt.Fprintf(h, "%s\x00%s\x00%v\n", n.ID, n.Uses, n.Needs)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Stages returns the names of the stages the plan's nodes come from, sorted.
func (p *Plan) Stages() []string {
	var names []string
	for _, n := range p.Nodes {
		if !slices.Contains(names, n.Stage) {
			names = append(names, n.Stage)
		}
	}
	slices.Sort(names)
	return names
}

// NodeID names the node of stage for item.
func NodeID(stage, item string) string {
	if item == "" {
		return stage
	}
	return stage + "[" + item + "]"
}

// Slice selects the stages a plan contains.
type Slice struct {
	// Environment, when set, keeps only the stages of that environment.
	// A stage that needs one outside the slice waits for what that one
	// needs inside it, if anything.
	Environment string
	// Stages, when set, keeps only the named stages (and drops edges to
	// the others).
	Stages []string
	// Services, when set, fans `for_each: service` stages out to these
	// services only: a branch deployment builds the services of the repos
	// it was given.
	Services []string
}

func (s Slice) keeps(st *Stage) bool {
	if s.Environment != "" && st.Environment != s.Environment {
		return false
	}
	if len(s.Stages) > 0 && !slices.Contains(s.Stages, st.Name) {
		return false
	}
	return true
}

// Plan expands the pipeline's stages into nodes. A stage with
// `for_each: service` becomes one node per service; a per-service node that
// needs another per-service stage waits only for the same service there.
func (p *Pipeline) Plan(slice Slice) (*Plan, error) {
	services := p.Spec.ServiceNames()
	if len(slice.Services) > 0 {
		services = slices.DeleteFunc(services, func(s string) bool { return !slices.Contains(slice.Services, s) })
	}
	items := func(st *Stage) []string {
		if st.ForEach == "service" {
			return services
		}
		return []string{""}
	}
	var nodes []PlanNode
	for _, name := range sortedKeys(p.Stages) {
		st := p.Stages[name]
		if !slice.keeps(st) {
			continue
		}
		for _, item := range items(st) {
			n := PlanNode{ID: NodeID(name, item), Stage: name, Uses: st.Uses, Item: item, Environment: st.Environment, Needs: []string{}}
			var needs func(st *Stage, item string)
			seen := map[string]bool{}
			needs = func(st *Stage, item string) {
				for _, need := range st.Needs {
					up := p.Stages[need]
					same := item != "" && up.ForEach == st.ForEach
					if !slice.keeps(up) {
						// What it waits for, it waits for through the
						// stage left out.
						upItem := ""
						if same {
							upItem = item
						}
						if k := need + "\x00" + upItem; !seen[k] {
							seen[k] = true
							needs(up, upItem)
						}
						continue
					}
					switch {
					case same:
						n.Needs = append(n.Needs, NodeID(need, item))
					default:
						for _, upItem := range items(up) {
							n.Needs = append(n.Needs, NodeID(need, upItem))
						}
					}
				}
			}
			needs(st, item)
			slices.Sort(n.Needs)
			n.Needs = slices.Compact(n.Needs)
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("no stage to run in this slice of the pipeline")
	}
	dn := make([]dag.Node, len(nodes))
	for i, n := range nodes {
		dn[i] = dag.Node{Name: n.ID, Needs: n.Needs}
	}
	g, err := dag.Build(dn)
	if err != nil {
		return nil, err // the loader rejects cycles and unknown needs first
	}
	byID := make(map[string]PlanNode, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	plan := &Plan{Graph: g, byID: map[string]int{}}
	for i, id := range g.Order() {
		plan.Nodes = append(plan.Nodes, byID[id])
		plan.byID[id] = i
	}
	return plan, nil
}

// Environments returns the environments the stages of the pipeline name,
// sorted.
func (p *Pipeline) Environments() []string {
	seen := map[string]bool{}
	var out []string
	for _, st := range p.Stages {
		if st.Environment != "" && !seen[st.Environment] {
			seen[st.Environment] = true
			out = append(out, st.Environment)
		}
	}
	slices.Sort(out)
	return out
}
