package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/placement"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// place runs placement for every deployment and writes the instances it
// adds and removes, marking their nodes.
func (c *Controller) place(ctx context.Context, mark func(nodeID string)) error {
	v, st := c.view, c.store
	now := c.clock.Now()
	live := c.live.Track(v.nodes)
	pnodes := make([]placement.Node, 0, len(v.nodes))
	for _, n := range v.nodes {
		ln := live[n.ID]
		draining := n.Scheduling == api.NodeDraining || n.Scheduling == api.NodeDrained
		pnodes = append(pnodes, placement.Node{ID: n.ID, Name: n.Name, Labels: n.Labels,
			Ready: ln.State == api.NodeReady,
			// A revoked node is lost at once: it will not come back.
			Lost:     ln.State == api.NodeRevoked || ln.State != api.NodeReady && ln.Down > c.cfg.RescheduleAfter,
			Cordoned: n.Scheduling == api.NodeCordoned, Draining: draining,
			DrainGlobal: draining && !c.runsReplicated(n.ID)})
	}
	// Only a drain looks at instances' health: without one, placement
	// spends no revision lookups on it. ready is nil then.
	var ready map[string]bool
	if slices.ContainsFunc(pnodes, func(n placement.Node) bool { return n.Draining }) {
		ready = make(map[string]bool, len(pnodes))
		for _, n := range pnodes {
			ready[n.ID] = n.Ready
		}
	}

	var add []api.Instance
	var remove []string
	for k, m := range v.byDep {
		if _, ok := v.deps[k]; !ok {
			for id := range m { // the deployment is gone (deleted mid-placement)
				remove = append(remove, id)
			}
		}
	}
	for k, d := range v.deps {
		existing := v.byDep[k]
		pex := make([]placement.Instance, 0, len(existing))
		for _, in := range existing {
			if ready == nil {
				pex = append(pex, placement.Instance{ID: in.ID, NodeID: in.NodeID})
			} else {
				pex = append(pex, c.placementInstance(in, ready[in.NodeID]))
			}
		}
		ds := d.Spec.Spec
		if sel, ok := v.projectNodes[d.Project]; ok {
			// Apply refused a selector reaching beyond the project's
			// nodes when it was applied; nodes labelled since are held
			// to the project's selector here.
			ds.Selector = ds.Selector.And(sel)
		}
		plan := placement.Place(ds, pnodes, pex)
		// New instances start on the stable revision (nothing, before the
		// first rollout completed); rollouts alone move instances forward.
		for _, nodeID := range plan.Add {
			add = append(add, api.Instance{ID: NewID(), Project: d.Project, Deployment: d.Name, NodeID: nodeID,
				Revision: d.StableRevision, SpecHash: v.revs.hash(d.Project, d.Name, d.StableRevision),
				State: api.InstancePending, CreatedAt: now, UpdatedAt: now, Version: 1})
		}
		for _, in := range plan.Remove {
			remove = append(remove, in.ID)
		}
		if len(plan.Add)+len(plan.Remove) > 0 {
			c.log.Info("placed", "project", d.Project, "deployment", d.Name, "added", len(plan.Add), "removed", len(plan.Remove))
		}
	}
	if len(add)+len(remove) > 0 {
		if err := st.ApplyPlacement(ctx, add, remove); err != nil {
			return err
		}
	}
	for _, in := range add {
		v.add(in)
		mark(in.NodeID)
	}
	for _, id := range remove {
		if in := v.remove(id); in != nil {
			mark(in.NodeID)
		}
	}
	return c.drained(ctx, len(remove) > 0)
}

// runsReplicated reports whether node id still runs an instance of a
// replicated deployment: until it does not, a drain keeps its global ones.
func (c *Controller) runsReplicated(id string) bool {
	v := c.view
	for _, in := range v.byNode[id] {
		if d, ok := v.deps[depKey(in.Project, in.Deployment)]; ok && d.Spec.Spec.Mode == spec.ModeReplicated {
			return true
		}
	}
	return false
}

// placementInstance is in as placement sees it: up when it serves on a
// ready node, as a rollout counts it, settled when it is up or failed.
func (c *Controller) placementInstance(in *api.Instance, ready bool) placement.Instance {
	ri, _ := c.view.revs.get(in.Project, in.Deployment, in.Revision)
	checked := ri.rev.Spec.Spec.Container.HealthCheck != nil
	up := ready && (in.State == api.InstanceHealthy || !checked && in.State == api.InstanceRunning)
	return placement.Instance{ID: in.ID, NodeID: in.NodeID, Up: up,
		Settled: up || in.State == api.InstanceFailed || in.State == api.InstanceUnhealthy}
}

// drained marks the draining nodes with nothing left on them drained, and
// notes whether a drain goes on: while one does, every status report may
// let an instance leave, so it asks for placement (record). A pass that
// removed instances asks for another, in which a node that no longer runs
// replicated instances stops its global ones.
func (c *Controller) drained(ctx context.Context, removed bool) error {
	v := c.view
	active := false
	for id, n := range v.nodes {
		if n.Scheduling != api.NodeDraining {
			continue
		}
		// Empty in the view is not enough: drained means the node runs
		// nothing, so its agent must have removed the containers too.
		if len(v.byNode[id]) > 0 || !c.live.Empty(id) {
			active = true
			continue
		}
		n, err := c.store.SetNodeScheduling(ctx, id, []api.NodeScheduling{api.NodeDraining}, api.NodeDrained)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed meanwhile; the next reload forgets it
		}
		if err != nil {
			return fmt.Errorf("marking node %s drained: %w", id, err)
		}
		v.nodes[id] = n
		if n.Scheduling == api.NodeDrained {
			c.log.Info("node drained", "node_id", id, "name", n.Name)
		}
	}
	c.mu.Lock()
	c.draining = active
	if active && removed {
		c.pending |= Place
	}
	c.mu.Unlock()
	if active && removed {
		c.Trigger()
	}
	return nil
}
