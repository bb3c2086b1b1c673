// Package placement decides which nodes run the instances of one deployment.
// It is pure: the server's controller gives it the spec, the nodes as the
// server sees them and the instances that exist, and applies the Plan it gets
// back. The same state always gives the same plan, and a state that already
// satisfies the spec gives a plan that changes nothing.
package placement

import (
	"cmp"
	"container/heap"
	"maps"
	"slices"

	"github.com/dockfleet/dockfleet/internal/spec"
)

// Node is a node as placement needs it.
type Node struct {
	ID, Name string
	Labels   map[string]string
	Ready    bool
	// Lost means the node has been unreachable for longer than the
	// reschedule grace period; it counts only when Ready is false.
	Lost bool
	// Cordoned means the node takes no new instances; those it runs stay.
	Cordoned bool
	// Draining means the node takes no new instances and its replicated
	// ones move to other nodes (Place says when each may stop).
	// DrainGlobal, set by the caller once no replicated instance is left
	// on the node, stops its global instances too: they go last.
	Draining, DrainGlobal bool
}

// schedulable reports whether n may take new instances.
func (n Node) schedulable() bool { return n.Ready && !n.Cordoned && !n.Draining }

// lost reports whether n's instances should run elsewhere.
func (n Node) lost() bool { return !n.Ready && n.Lost }

// Instance is an existing instance of the deployment being placed.
type Instance struct {
	ID, NodeID string
	// Up means the instance serves: healthy, or running with no health
	// check, on a ready node. Settled means it is up or has failed: it is
	// no longer on its way up. Only a drain looks at them.
	Up, Settled bool
}

// Plan is what to change. Keep and Remove split the existing instances
// between them; Add holds a node ID for each new instance, a node appearing
// once per instance it gets. The lists are sorted: Keep and Remove by
// instance ID, Add in the order the instances were placed.
type Plan struct {
	Keep   []Instance
	Remove []Instance
	Add    []string
}

// Place plans the instances of a deployment with spec s over nodes, given the
// instances that exist.
//
// Global mode runs one instance on every matching ready node. An instance on
// a matching node that is not ready stays: it cannot be moved, and it will
// run again when the node returns. Replicated mode runs s.Replicas instances
// over the matching nodes: instances on lost nodes are replaced on ready ones,
// new instances go to the ready nodes with the fewest, and surplus ones come
// off the nodes that are not ready, then the nodes with the most. Running
// instances are never moved only to even out the spread.
//
// Cordoned and draining nodes take no new instances. A draining node's
// replicated instances do not count towards s.Replicas, so their
// replacements start elsewhere at once; each one stops only when it is
// replaced (drainable says when), never taking the deployment below its
// replicas less update.maxUnavailable healthy instances. Its global
// instances stop once the caller sets DrainGlobal.
//
// Place expects a validated spec; any mode but replicated is placed as
// global, the default.
func Place(s spec.DeploymentSpec, nodes []Node, existing []Instance) Plan {
	byID := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		if _, dup := byID[n.ID]; !dup {
			byID[n.ID] = n
		}
	}
	// Sorted nodes and instances make the plan independent of input order.
	sorted := slices.SortedFunc(maps.Values(byID), func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	instances := slices.Clone(existing)
	slices.SortFunc(instances, func(a, b Instance) int { return cmp.Compare(a.ID, b.ID) })

	var p Plan
	if s.Mode == spec.ModeReplicated {
		p = replicated(s, byID, sorted, instances)
	} else {
		p = global(s, byID, sorted, instances)
	}
	slices.SortFunc(p.Keep, func(a, b Instance) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(p.Remove, func(a, b Instance) int { return cmp.Compare(a.ID, b.ID) })
	return p
}

func global(s spec.DeploymentSpec, byID map[string]Node, nodes []Node, instances []Instance) Plan {
	var p Plan
	has := map[string]bool{}
	for _, in := range instances {
		n, ok := byID[in.NodeID]
		// Of several instances on one node the lowest ID stays, so that the
		// choice does not depend on the order the store lists them in.
		if !ok || !s.Selector.Matches(n.Labels) || has[n.ID] || n.Draining && n.DrainGlobal {
			p.Remove = append(p.Remove, in)
			continue
		}
		has[n.ID] = true
		p.Keep = append(p.Keep, in)
	}
	for _, n := range nodes {
		if n.schedulable() && !has[n.ID] && s.Selector.Matches(n.Labels) {
			p.Add = append(p.Add, n.ID)
		}
	}
	return p
}

func replicated(s spec.DeploymentSpec, byID map[string]Node, nodes []Node, instances []Instance) Plan {
	var p Plan
	// kept holds the instances on each node that may stay, lowest ID first.
	kept := map[string][]Instance{}
	var draining []Instance
	total := 0
	for _, in := range instances {
		n, ok := byID[in.NodeID]
		if !ok || !s.Selector.Matches(n.Labels) || n.lost() {
			p.Remove = append(p.Remove, in)
			continue
		}
		if n.Draining {
			draining = append(draining, in)
			continue
		}
		kept[n.ID] = append(kept[n.ID], in)
		total++
	}

	// Surplus comes off nodes that are not ready first, since those
	// instances are not serving anyway; then off the nodes with the most,
	// the larger ID first on a tie. The newest (highest ID) instance goes.
	if want := max(s.Replicas, 0); total > want {
		q := &queue{less: func(a, b string) bool {
			na, nb := byID[a], byID[b]
			if na.Ready != nb.Ready {
				return !na.Ready
			}
			if ca, cb := len(kept[a]), len(kept[b]); ca != cb {
				return ca > cb
			}
			return a > b
		}}
		for id := range kept {
			q.ids = append(q.ids, id)
		}
		heap.Init(q)
		for ; total > want; total-- {
			id := q.ids[0]
			ins := kept[id]
			p.Remove = append(p.Remove, ins[len(ins)-1])
			kept[id] = ins[:len(ins)-1]
			if len(kept[id]) == 0 {
				heap.Pop(q)
			} else {
				heap.Fix(q, 0)
			}
		}
	}
	for _, ins := range kept {
		p.Keep = append(p.Keep, ins...)
	}
	stop := drainable(s, p.Keep, draining)
	for _, in := range draining {
		if stop[in.ID] {
			p.Remove = append(p.Remove, in)
		} else {
			p.Keep = append(p.Keep, in)
		}
	}

	// Each new instance goes to the ready node with the fewest, by name and
	// then ID on a tie, so that 5 over 3 empty nodes spread 2/2/1.
	q := &queue{less: func(a, b string) bool {
		if ca, cb := len(kept[a]), len(kept[b]); ca != cb {
			return ca < cb
		}
		if na, nb := byID[a].Name, byID[b].Name; na != nb {
			return na < nb
		}
		return a < b
	}}
	for _, n := range nodes {
		if n.schedulable() && s.Selector.Matches(n.Labels) {
			q.ids = append(q.ids, n.ID)
		}
	}
	if len(q.ids) == 0 {
		return p
	}
	heap.Init(q)
	for ; total < s.Replicas; total++ {
		id := q.ids[0]
		p.Add = append(p.Add, id)
		// A placeholder stands for the new instance in the count.
		kept[id] = append(kept[id], Instance{NodeID: id})
		heap.Fix(q, 0)
	}
	return p
}

// drainable returns the instances on draining nodes that may stop now,
// given the instances kept elsewhere (others). One that is not up serves
// nothing and stops at once. Up ones stop as their replacements settle: of
// the D instances on draining nodes, others holds s.Replicas-D that were
// there before the drain and the replacements started for it, so the
// settled ones beyond s.Replicas-D stand for replaced instances. A
// replacement that failed settles too, so the second bound keeps the
// deployment at s.Replicas less update.maxUnavailable instances up: one
// already below keeps its draining instances. The newest (highest ID) stop
// first.
func drainable(s spec.DeploymentSpec, others, draining []Instance) map[string]bool {
	stop := map[string]bool{}
	settled, up := 0, 0
	for _, in := range others {
		if in.Settled {
			settled++
		}
		if in.Up {
			up++
		}
	}
	var serving []Instance
	for _, in := range draining {
		if in.Up {
			serving = append(serving, in)
		} else {
			stop[in.ID] = true
		}
	}
	floor := s.Replicas - s.Update.MaxUnavailable.Of(s.Replicas)
	n := min(settled-(s.Replicas-len(draining)), up+len(serving)-floor, len(serving))
	for i := len(serving) - 1; i >= len(serving)-n; i-- {
		stop[serving[i].ID] = true
	}
	return stop
}

// queue is a heap of node IDs in the order less gives.
type queue struct {
	ids  []string
	less func(a, b string) bool
}

func (q *queue) Len() int           { return len(q.ids) }
func (q *queue) Less(i, j int) bool { return q.less(q.ids[i], q.ids[j]) }
func (q *queue) Swap(i, j int)      { q.ids[i], q.ids[j] = q.ids[j], q.ids[i] }
func (q *queue) Push(x any)         { q.ids = append(q.ids, x.(string)) }

func (q *queue) Pop() any {
	last := q.ids[len(q.ids)-1]
	q.ids = q.ids[:len(q.ids)-1]
	return last
}
