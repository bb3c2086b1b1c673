package controller

import (
	"context"
	"errors"
	"slices"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/rollout"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/termtext"
)

// progress steps every active rollout once, persists what each step
// decided and marks the nodes of the instances it moved; fresh says that
// this pass read the deployments. It returns the images nodes must pull
// for rollouts in their pre-pull phase.
func (c *Controller) progress(ctx context.Context, fresh bool, mark func(nodeID string)) (map[string][]string, error) {
	active, err := c.store.ActiveRollouts(ctx)
	if err != nil {
		return nil, err
	}
	if len(active) == 0 {
		c.trackPulls(nil, nil)
		return nil, nil
	}
	v := c.view
	pullReqs := map[string][]string{}
	prePulling := map[string]bool{} // the images of rollouts in pre-pull
	ready := c.live.Ready()
	now := c.clock.Now()
	for _, r := range active {
		d, ok := v.deps[depKey(r.Project, r.Deployment)]
		to, known := v.revs.get(r.Project, r.Deployment, r.To)
		if !ok || !known {
			// The rollout is newer than the view: its revision was applied
			// after the deployments were read (on several replicas, maybe
			// before the leader heard of it). Its update strategy, image
			// and spec hash are not known yet; step it once they are. A
			// pass that has just read them leaves the next read to the
			// apply's own Need: asking again could only loop.
			if !fresh {
				c.Need(ReloadDeployments)
			}
			continue
		}
		insts := rolloutInstances(v.deployment(r.Project, r.Deployment), v, ready)
		image := to.image
		c.mu.Lock()
		for k := range insts {
			if p, ok := c.pulls[insts[k].NodeID][image]; ok && p.answered {
				insts[k].Pulled, insts[k].PullError = p.err == "", p.err
			}
		}
		c.mu.Unlock()
		// The strategy is the one applied with the rollout's revision,
		// whatever the deployment's is now.
		res := rollout.Step(r, to.rev.Spec.Spec.Update, insts, now)
		if !res.Wake.IsZero() {
			c.wakeAt(res.Wake)
		}
		if res.Rollout.Phase == api.PhasePrePull && res.Rollout.State == api.RolloutRunning {
			prePulling[image] = true
			c.requestPulls(pullReqs, res.Rollout, insts, image)
		}
		if !res.Changed {
			continue
		}
		moves, err := c.persist(ctx, res, v.revs)
		if errors.Is(err, store.ErrConflict) {
			c.Trigger() // a user's action came between; step again
			continue
		}
		if err != nil {
			return nil, err
		}
		at := c.clock.Now()
		for _, m := range moves {
			v.move(m, at)
			if in := v.insts[m.ID]; in != nil {
				mark(in.NodeID)
			}
		}
		if res.Stable != nil {
			d.StableRevision = *res.Stable
			v.deps[depKey(r.Project, r.Deployment)] = d
		}
	}
	c.trackPulls(pullReqs, prePulling)
	return pullReqs, nil
}

// trackPulls notes the pull requests of this pass, so that Pulled accepts
// their answers, and forgets the requests and answers of images no
// rollout pre-pulls any more and of nodes that are gone: what c.pulls
// holds is bounded by what the server asked for, never by what nodes send.
func (c *Controller) trackPulls(reqs map[string][]string, prePulling map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for nodeID, images := range reqs {
		if c.pulls[nodeID] == nil {
			c.pulls[nodeID] = map[string]pullResult{}
		}
		for _, img := range images {
			if _, ok := c.pulls[nodeID][img]; !ok {
				c.pulls[nodeID][img] = pullResult{}
			}
		}
	}
	for nodeID, m := range c.pulls {
		for img := range m {
			if !prePulling[img] {
				delete(m, img)
			}
		}
		if !c.live.Known(nodeID) || len(m) == 0 {
			delete(c.pulls, nodeID)
		}
	}
}

// requestPulls asks the nodes that still lack a rollout's image to pull it,
// at most PrePullParallelism of them at a time, so a large fleet does not
// hit its registry all at once.
func (c *Controller) requestPulls(reqs map[string][]string, r api.Rollout, insts []rollout.Instance, image string) {
	var nodes []string
	for _, i := range insts {
		if i.Revision == r.To || !i.Reachable || i.Pulled || i.PullError != "" ||
			slices.Contains(r.PrePulled, i.NodeID) || slices.Contains(r.PullFailed, i.ID) || slices.Contains(nodes, i.NodeID) {
			continue
		}
		nodes = append(nodes, i.NodeID)
	}
	slices.Sort(nodes)
	for _, n := range nodes[:min(len(nodes), c.cfg.PrePullParallelism)] {
		reqs[n] = append(reqs[n], image)
	}
}

// pullResult is a pre-pull request and, once answered, the node's answer.
type pullResult struct {
	answered bool
	err      string
}

// Pulled records a node's answer to a pre-pull request. An answer to no
// request (an image the server did not ask this node for, or no longer
// pre-pulls) is dropped, and logged sparsely: a node that sends them is
// broken or hostile.
func (c *Controller) Pulled(nodeID string, p *agentproto.ImagePull) {
	if c.following() {
		c.cfg.Cluster.Report(nodeID, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Pulled{Pulled: p}})
		return
	}
	c.mu.Lock()
	_, ok := c.pulls[nodeID][p.Image]
	if ok {
		c.pulls[nodeID][p.Image] = pullResult{answered: true, err: p.Error}
	}
	c.mu.Unlock()
	if !ok {
		img, _ := termtext.Escape(p.Image, 64)
		c.unaskedPullLog.Warn("ignoring an image pull answer: the server did not ask this node for that image",
			"node_id", nodeID, "image", img, "image_bytes", len(p.Image))
		return
	}
	c.Trigger()
}

// persist writes one step's result and wakes event followers. It returns
// the instance moves it wrote.
func (c *Controller) persist(ctx context.Context, res rollout.Result, revs revisionSet) ([]store.InstanceMove, error) {
	r := res.Rollout
	moves := make([]store.InstanceMove, len(res.Moves))
	for i, m := range res.Moves {
		moves[i] = store.InstanceMove{ID: m.ID, Revision: m.Revision, SpecHash: revs.hash(r.Project, r.Deployment, m.Revision)}
	}
	events := make([]api.Event, len(res.Events))
	for i, e := range res.Events {
		events[i] = api.Event{Time: r.UpdatedAt, Project: r.Project, Deployment: r.Deployment, Rollout: r.ID, Type: e.Type, Message: e.Message}
		c.log.Info("rollout", "project", r.Project, "deployment", r.Deployment, "rollout_id", r.ID, "event", e.Type, "message", e.Message)
	}
	if _, err := c.store.StepRollout(ctx, r, moves, res.Stable, events); err != nil {
		return nil, err
	}
	c.notify()
	return moves, nil
}

// rolloutInstances describes a deployment's instances for rollout.Step.
func rolloutInstances(insts []*api.Instance, v *view, ready map[string]bool) []rollout.Instance {
	out := make([]rollout.Instance, 0, len(insts))
	for _, in := range insts {
		name := in.NodeID
		reachable := ready[in.NodeID]
		if reachable {
			name = v.nodes[in.NodeID].Name
		}
		ri, _ := v.revs.get(in.Project, in.Deployment, in.Revision)
		out = append(out, rollout.Instance{ID: in.ID, NodeID: in.NodeID, NodeName: name, Revision: in.Revision, State: in.State, Reason: in.Reason,
			Since: in.UpdatedAt, Reachable: reachable, Checked: ri.rev.Spec.Spec.Container.HealthCheck != nil})
	}
	return out
}

// PersistAction writes a user's action, with the spec hashes its moves
// need, and has the controller read back what it changed.
func (c *Controller) PersistAction(ctx context.Context, res rollout.Result) error {
	d, err := c.store.GetDeployment(ctx, res.Rollout.Project, res.Rollout.Deployment)
	if err != nil {
		return err
	}
	revs, err := loadRevisions(ctx, c.store, []api.Deployment{d}, c.digestLog.Warn)
	if err != nil {
		return err
	}
	if _, err := c.persist(ctx, res, revs); err != nil {
		return err
	}
	if len(res.Moves) > 0 || res.Stable != nil {
		c.Need(ReloadDeployments | ReloadInstances)
	}
	return nil
}

// PullNodes is how many nodes the controller holds pre-pull requests or
// answers of: never more than it asked, whatever nodes send.
func (c *Controller) PullNodes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pulls)
}
