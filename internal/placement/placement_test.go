package placement

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/dockfleet/dockfleet/internal/spec"
)

func node(id string, ready bool, labels ...string) Node {
	n := Node{ID: id, Name: "node-" + id, Ready: ready, Labels: map[string]string{}}
	for _, l := range labels {
		n.Labels[l] = "yes"
	}
	return n
}

func lostNode(id string, labels ...string) Node {
	n := node(id, false, labels...)
	n.Lost = true
	return n
}

func inst(id, nodeID string) Instance { return Instance{ID: id, NodeID: nodeID} }

var web = spec.Selector{MatchLabels: map[string]string{"web": "yes"}}

func globalSpec(sel spec.Selector) spec.DeploymentSpec {
	return spec.DeploymentSpec{Mode: spec.ModeGlobal, Selector: sel}
}

func replicatedSpec(n int, sel spec.Selector) spec.DeploymentSpec {
	return spec.DeploymentSpec{Mode: spec.ModeReplicated, Replicas: n, Selector: sel}
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name     string
		spec     spec.DeploymentSpec
		nodes    []Node
		existing []Instance
		want     Plan
	}{
		{
			name:  "global: one on every matching ready node",
			spec:  globalSpec(web),
			nodes: []Node{node("c", true, "web"), node("a", true, "web"), node("b", true, "db")},
			want:  Plan{Add: []string{"a", "c"}},
		},
		{
			name:  "global: zero selector matches every node",
			spec:  globalSpec(spec.Selector{}),
			nodes: []Node{node("a", true), node("b", true, "db")},
			want:  Plan{Add: []string{"a", "b"}},
		},
		{
			name:  "global: nothing new on a node that is not ready",
			spec:  globalSpec(web),
			nodes: []Node{node("a", false, "web"), lostNode("b", "web")},
			want:  Plan{},
		},
		{
			name:     "global: keeps instances on nodes that are not ready, even lost ones",
			spec:     globalSpec(web),
			nodes:    []Node{node("a", false, "web"), lostNode("b", "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "b")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "b")}},
		},
		{
			name:     "global: removes from nodes that no longer match or exist",
			spec:     globalSpec(web),
			nodes:    []Node{node("a", true, "db"), node("b", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "gone"), inst("i3", "b")},
			want:     Plan{Keep: []Instance{inst("i3", "b")}, Remove: []Instance{inst("i1", "a"), inst("i2", "gone")}},
		},
		{
			name:     "global: duplicates on a node keep the lowest ID",
			spec:     globalSpec(web),
			nodes:    []Node{node("a", true, "web")},
			existing: []Instance{inst("i3", "a"), inst("i1", "a"), inst("i2", "a")},
			want:     Plan{Keep: []Instance{inst("i1", "a")}, Remove: []Instance{inst("i2", "a"), inst("i3", "a")}},
		},
		{
			name:     "global: stable",
			spec:     globalSpec(web),
			nodes:    []Node{node("a", true, "web"), node("b", true, "web"), node("c", true)},
			existing: []Instance{inst("i1", "a"), inst("i2", "b")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "b")}},
		},
		{
			name:  "global: empty mode is global",
			spec:  spec.DeploymentSpec{Selector: web},
			nodes: []Node{node("a", true, "web")},
			want:  Plan{Add: []string{"a"}},
		},
		{
			name:  "replicated: 5 over 3 empty nodes spread 2/2/1 by name",
			spec:  replicatedSpec(5, web),
			nodes: []Node{{ID: "1", Name: "c", Ready: true, Labels: map[string]string{"web": "yes"}}, {ID: "2", Name: "a", Ready: true, Labels: map[string]string{"web": "yes"}}, {ID: "3", Name: "b", Ready: true, Labels: map[string]string{"web": "yes"}}},
			want:  Plan{Add: []string{"2", "3", "1", "2", "3"}},
		},
		{
			name:  "replicated: same names fall back to ID",
			spec:  replicatedSpec(3, spec.Selector{}),
			nodes: []Node{{ID: "b", Name: "x", Ready: true}, {ID: "a", Name: "x", Ready: true}},
			want:  Plan{Add: []string{"a", "b", "a"}},
		},
		{
			name:     "replicated: adds to the nodes with the fewest",
			spec:     replicatedSpec(5, web),
			nodes:    []Node{node("a", true, "web"), node("b", true, "web"), node("c", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "a"), inst("i3", "c")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "a"), inst("i3", "c")}, Add: []string{"b", "b"}},
		},
		{
			name:     "replicated: only ready matching nodes get new instances",
			spec:     replicatedSpec(2, web),
			nodes:    []Node{node("a", false, "web"), node("b", true), node("c", true, "web")},
			existing: nil,
			want:     Plan{Add: []string{"c", "c"}},
		},
		{
			name:     "replicated: replaces instances on lost nodes",
			spec:     replicatedSpec(2, web),
			nodes:    []Node{lostNode("a", "web"), node("b", true, "web"), node("c", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "b")},
			want:     Plan{Keep: []Instance{inst("i2", "b")}, Remove: []Instance{inst("i1", "a")}, Add: []string{"c"}},
		},
		{
			name:     "replicated: keeps instances on unreachable nodes within the grace period",
			spec:     replicatedSpec(2, web),
			nodes:    []Node{node("a", false, "web"), node("b", true, "web"), node("c", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "b")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "b")}},
		},
		{
			name: "replicated: lost counts only when not ready",
			spec: replicatedSpec(1, web),
			nodes: []Node{
				{ID: "a", Name: "a", Ready: true, Lost: true, Labels: map[string]string{"web": "yes"}},
			},
			existing: []Instance{inst("i1", "a")},
			want:     Plan{Keep: []Instance{inst("i1", "a")}},
		},
		{
			name:     "replicated: removes from unknown and no longer matching nodes",
			spec:     replicatedSpec(2, web),
			nodes:    []Node{node("a", true), node("b", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "gone"), inst("i3", "b")},
			want:     Plan{Keep: []Instance{inst("i3", "b")}, Remove: []Instance{inst("i1", "a"), inst("i2", "gone")}, Add: []string{"b"}},
		},
		{
			name:     "replicated: surplus comes off nodes that are not ready first",
			spec:     replicatedSpec(2, web),
			nodes:    []Node{node("a", true, "web"), node("b", false, "web"), node("c", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "a"), inst("i3", "b"), inst("i4", "c")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i4", "c")}, Remove: []Instance{inst("i2", "a"), inst("i3", "b")}},
		},
		{
			name:     "replicated: surplus comes off the fullest node, larger ID on a tie, newest instance",
			spec:     replicatedSpec(4, web),
			nodes:    []Node{node("a", true, "web"), node("b", true, "web"), node("c", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "a"), inst("i3", "a"), inst("i4", "b"), inst("i5", "b"), inst("i6", "c"), inst("i7", "c")},
			// 3/2/2: a goes to 2, then c (2/2/1), then b (2/1/1).
			want: Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "a"), inst("i4", "b"), inst("i6", "c")}, Remove: []Instance{inst("i3", "a"), inst("i5", "b"), inst("i7", "c")}},
		},
		{
			name:     "replicated: scale to zero",
			spec:     replicatedSpec(0, web),
			nodes:    []Node{node("a", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "a")},
			want:     Plan{Remove: []Instance{inst("i1", "a"), inst("i2", "a")}},
		},
		{
			name:     "replicated: stable",
			spec:     replicatedSpec(3, web),
			nodes:    []Node{node("a", true, "web"), node("b", true, "web"), node("c", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "b"), inst("i3", "c")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "b"), inst("i3", "c")}},
		},
		{
			name:     "replicated: stable without rebalancing onto a new node",
			spec:     replicatedSpec(2, web),
			nodes:    []Node{node("a", true, "web"), node("b", true, "web")},
			existing: []Instance{inst("i1", "a"), inst("i2", "a")},
			want:     Plan{Keep: []Instance{inst("i1", "a"), inst("i2", "a")}},
		},
		{
			name:     "replicated: no ready node, nothing to add",
			spec:     replicatedSpec(3, web),
			nodes:    []Node{node("a", false, "web")},
			existing: []Instance{inst("i1", "a")},
			want:     Plan{Keep: []Instance{inst("i1", "a")}},
		},
		{
			name:  "replicated: duplicate node IDs count once",
			spec:  replicatedSpec(2, spec.Selector{}),
			nodes: []Node{node("a", true), node("a", true)},
			want:  Plan{Add: []string{"a", "a"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Place(tt.spec, tt.nodes, tt.existing)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Place() = %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestPlaceProperties checks the invariants of Place on random states.
func TestPlaceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 3000 {
		s, nodes, existing := randomState(rng)
		name := fmt.Sprintf("%d/%s", iter, s.Mode)
		plan := Place(s, nodes, existing)

		// Keep and Remove split the existing instances.
		split := slices.Concat(plan.Keep, plan.Remove)
		if !sameInstances(split, existing) {
			t.Fatalf("%s: Keep+Remove = %v; want a split of %v", name, split, existing)
		}
		byID := map[string]Node{}
		for _, n := range nodes {
			byID[n.ID] = n
		}
		for _, id := range plan.Add {
			if n := byID[id]; !n.Ready || !s.Selector.Matches(n.Labels) {
				t.Fatalf("%s: added to %+v, which is not a ready matching node", name, n)
			}
		}

		// The state after the plan.
		after := slices.Clone(plan.Keep)
		for i, id := range plan.Add {
			after = append(after, inst(fmt.Sprintf("new%03d", i), id))
		}
		perNode := map[string]int{}
		for _, in := range after {
			n, ok := byID[in.NodeID]
			if !ok || !s.Selector.Matches(n.Labels) {
				t.Fatalf("%s: %v is left on a node that is gone or does not match", name, in)
			}
			if s.Mode == spec.ModeReplicated && n.lost() {
				t.Fatalf("%s: %v is left on a lost node", name, in)
			}
			perNode[in.NodeID]++
		}
		readyMatching := 0
		for _, n := range nodes {
			if n.Ready && s.Selector.Matches(n.Labels) {
				readyMatching++
			}
		}
		switch s.Mode {
		case spec.ModeGlobal:
			for _, n := range nodes {
				want := 0
				if n.Ready && s.Selector.Matches(n.Labels) {
					want = 1
				}
				if got := perNode[n.ID]; got != want && (n.Ready || got > 1) {
					t.Fatalf("%s: node %+v has %d instances; want %d", name, n, got, want)
				}
			}
		case spec.ModeReplicated:
			if readyMatching > 0 && len(after) != s.Replicas {
				t.Fatalf("%s: %d instances after the plan; want %d", name, len(after), s.Replicas)
			}
			if readyMatching == 0 && len(after) > s.Replicas {
				t.Fatalf("%s: %d instances after the plan; want at most %d", name, len(after), s.Replicas)
			}
			if len(existing) == 0 && readyMatching > 0 {
				lo, hi := len(after), 0
				for _, n := range nodes {
					if n.Ready && s.Selector.Matches(n.Labels) {
						lo, hi = min(lo, perNode[n.ID]), max(hi, perNode[n.ID])
					}
				}
				if hi-lo > 1 {
					t.Fatalf("%s: spread %d-%d from empty; want at most 1 apart", name, lo, hi)
				}
			}
		}

		// Stable: the state after the plan needs no change.
		if again := Place(s, nodes, after); len(again.Add) > 0 || len(again.Remove) > 0 {
			t.Fatalf("%s: plan after applying the plan = %+v; want no change", name, again)
		}
		// Deterministic: input order does not matter.
		rng.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
		rng.Shuffle(len(existing), func(i, j int) { existing[i], existing[j] = existing[j], existing[i] })
		if shuffled := Place(s, nodes, existing); !reflect.DeepEqual(shuffled, plan) {
			t.Fatalf("%s: plan from shuffled input = %+v; want %+v", name, shuffled, plan)
		}
	}
}

func randomState(rng *rand.Rand) (spec.DeploymentSpec, []Node, []Instance) {
	var s spec.DeploymentSpec
	if rng.IntN(2) == 0 {
		s.Mode = spec.ModeGlobal
	} else {
		s.Mode = spec.ModeReplicated
		s.Replicas = rng.IntN(12)
	}
	if rng.IntN(3) > 0 {
		s.Selector = spec.Selector{MatchExpressions: []spec.Requirement{{Key: "zone", Operator: spec.OpIn, Values: []string{"a", "b"}}}}
	}
	nodes := make([]Node, rng.IntN(8))
	for i := range nodes {
		n := Node{ID: fmt.Sprintf("n%02d", i), Name: fmt.Sprintf("host-%d", rng.IntN(4)), Ready: rng.IntN(4) > 0}
		n.Lost = !n.Ready && rng.IntN(2) == 0
		n.Labels = map[string]string{"zone": []string{"a", "b", "c"}[rng.IntN(3)]}
		nodes[i] = n
	}
	var existing []Instance
	if rng.IntN(4) > 0 {
		existing = make([]Instance, rng.IntN(12))
		for i := range existing {
			// Some instances are on nodes that are gone.
			existing[i] = inst(fmt.Sprintf("i%02d", i), fmt.Sprintf("n%02d", rng.IntN(len(nodes)+2)))
		}
	}
	return s, nodes, existing
}

func sameInstances(a, b []Instance) bool {
	cmp := func(x, y Instance) int {
		if x.ID < y.ID {
			return -1
		}
		if x.ID > y.ID {
			return 1
		}
		return 0
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

func cordoned(n Node) Node { n.Cordoned = true; return n }

func draining(n Node, global bool) Node { n.Draining, n.DrainGlobal = true, global; return n }

// up, starting and failed are instances in the states a drain tells apart.
func up(id, nodeID string) Instance       { return Instance{ID: id, NodeID: nodeID, Up: true, Settled: true} }
func starting(id, nodeID string) Instance { return Instance{ID: id, NodeID: nodeID} }
func failed(id, nodeID string) Instance   { return Instance{ID: id, NodeID: nodeID, Settled: true} }

func withMaxUnavailable(s spec.DeploymentSpec, n int) spec.DeploymentSpec {
	s.Update.MaxUnavailable = spec.IntOrPercent{Value: n}
	return s
}

// TestPlaceDrain follows drains step by step: each case is the state one
// pass sees, and what it may stop.
func TestPlaceDrain(t *testing.T) {
	tests := []struct {
		name     string
		spec     spec.DeploymentSpec
		nodes    []Node
		existing []Instance
		want     Plan
	}{
		{
			name:  "cordoned: nothing new, replicated",
			spec:  replicatedSpec(2, spec.Selector{}),
			nodes: []Node{cordoned(node("a", true)), node("b", true)},
			want:  Plan{Add: []string{"b", "b"}},
		},
		{
			name:     "cordoned: what runs stays, nothing moves",
			spec:     replicatedSpec(2, spec.Selector{}),
			nodes:    []Node{cordoned(node("a", true)), node("b", true)},
			existing: []Instance{up("i1", "a"), up("i2", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "a")}},
		},
		{
			name:     "cordoned: global stays, no new one",
			spec:     globalSpec(spec.Selector{}),
			nodes:    []Node{cordoned(node("a", true)), cordoned(node("b", true))},
			existing: []Instance{up("i1", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a")}},
		},
		{
			name:     "draining: replacements start elsewhere, the drained instance stays up",
			spec:     withMaxUnavailable(replicatedSpec(3, spec.Selector{}), 1),
			nodes:    []Node{node("a", true), node("b", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), up("i2", "b"), up("i3", "c")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "b"), up("i3", "c")}, Add: []string{"a"}},
		},
		{
			name:     "draining: waits while the replacement starts, whatever maxUnavailable allows",
			spec:     withMaxUnavailable(replicatedSpec(3, spec.Selector{}), 3),
			nodes:    []Node{node("a", true), node("b", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), up("i2", "b"), up("i3", "c"), starting("i4", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "b"), up("i3", "c"), starting("i4", "a")}},
		},
		{
			name:     "draining: stops once the replacement is healthy",
			spec:     withMaxUnavailable(replicatedSpec(3, spec.Selector{}), 0),
			nodes:    []Node{node("a", true), node("b", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), up("i2", "b"), up("i3", "c"), up("i4", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "b"), up("i4", "a")}, Remove: []Instance{up("i3", "c")}},
		},
		{
			name:  "draining: one for one as replacements become healthy, the newest first",
			spec:  withMaxUnavailable(replicatedSpec(3, spec.Selector{}), 1),
			nodes: []Node{node("a", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "c"), up("i2", "c"), up("i3", "c"),
				up("i4", "a"), starting("i5", "a"), starting("i6", "a")},
			want: Plan{Keep: []Instance{up("i1", "c"), up("i2", "c"), up("i4", "a"), starting("i5", "a"), starting("i6", "a")},
				Remove: []Instance{up("i3", "c")}},
		},
		{
			name:     "draining: a failed replacement does not take the deployment below maxUnavailable",
			spec:     withMaxUnavailable(replicatedSpec(2, spec.Selector{}), 0),
			nodes:    []Node{node("a", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), up("i2", "c"), failed("i3", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "c"), failed("i3", "a")}},
		},
		{
			name:     "draining: a failed replacement lets one stop within maxUnavailable",
			spec:     withMaxUnavailable(replicatedSpec(3, spec.Selector{}), 1),
			nodes:    []Node{node("a", true), node("b", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), up("i2", "b"), up("i3", "c"), failed("i4", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "b"), failed("i4", "a")}, Remove: []Instance{up("i3", "c")}},
		},
		{
			name:     "draining: a deployment already degraded elsewhere moves once a replacement is up",
			spec:     withMaxUnavailable(replicatedSpec(3, spec.Selector{}), 1),
			nodes:    []Node{node("a", true), node("b", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), failed("i2", "b"), up("i3", "c"), up("i4", "a")},
			want:     Plan{Keep: []Instance{up("i1", "a"), failed("i2", "b"), up("i4", "a")}, Remove: []Instance{up("i3", "c")}},
		},
		{
			name:     "draining: instances not up stop at once",
			spec:     withMaxUnavailable(replicatedSpec(2, spec.Selector{}), 0),
			nodes:    []Node{node("a", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), failed("i2", "c")},
			want:     Plan{Keep: []Instance{up("i1", "a")}, Remove: []Instance{failed("i2", "c")}, Add: []string{"a"}},
		},
		{
			name:     "draining: with nowhere to go, everything waits",
			spec:     withMaxUnavailable(replicatedSpec(2, spec.Selector{}), 1),
			nodes:    []Node{cordoned(node("a", true)), draining(node("c", true), false)},
			existing: []Instance{up("i1", "c"), up("i2", "c")},
			want:     Plan{Keep: []Instance{up("i1", "c"), up("i2", "c")}},
		},
		{
			name:     "draining: global instances stay until the replicated ones moved",
			spec:     globalSpec(spec.Selector{}),
			nodes:    []Node{node("a", true), draining(node("c", true), false)},
			existing: []Instance{up("i1", "a"), up("i2", "c")},
			want:     Plan{Keep: []Instance{up("i1", "a"), up("i2", "c")}},
		},
		{
			name:     "draining: global instances stop last",
			spec:     globalSpec(spec.Selector{}),
			nodes:    []Node{node("a", true), draining(node("c", true), true)},
			existing: []Instance{up("i1", "a"), up("i2", "c")},
			want:     Plan{Keep: []Instance{up("i1", "a")}, Remove: []Instance{up("i2", "c")}},
		},
		{
			name:  "draining: no new global instance",
			spec:  globalSpec(spec.Selector{}),
			nodes: []Node{draining(node("c", true), false)},
			want:  Plan{},
		},
		{
			name:     "draining and lost: the instances go at once",
			spec:     withMaxUnavailable(replicatedSpec(1, spec.Selector{}), 0),
			nodes:    []Node{node("a", true), draining(lostNode("c"), false)},
			existing: []Instance{up("i1", "c")},
			want:     Plan{Remove: []Instance{up("i1", "c")}, Add: []string{"a"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Place(tt.spec, tt.nodes, tt.existing)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}
