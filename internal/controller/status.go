package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/termtext"
)

// Status queues an agent's report on one of its instances for the status
// writer. A full queue holds the agent's stream back, which is the
// backpressure we want; a report lost to a crash is sent again by the agent
// in the hello of its next connection.
func (c *Controller) Status(ctx context.Context, nodeID string, st *agentproto.InstanceStatus) {
	if c.following() {
		c.cfg.Cluster.Report(nodeID, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: st}})
		return
	}
	if !validStates[api.InstanceState(st.State)] {
		c.log.Warn("ignoring instance status with an unknown state", "node_id", nodeID, "instance_id", st.InstanceId, "state", st.State)
		return
	}
	at := time.Unix(0, st.ObservedAt).UTC()
	if st.ObservedAt == 0 {
		at = c.clock.Now().UTC()
	}
	// Only a digest is worth keeping (and pinning): anything else a
	// node sends in its place is dropped here, before it is stored.
	digest := st.ImageDigest
	if digest != "" {
		if _, _, err := registry.ParseDigest(digest); err != nil {
			c.digestLog.Warn("ignoring the image digest a node reported", "node_id", nodeID, "instance_id", st.InstanceId, "err", err)
			digest = ""
		}
	}
	if len(st.Events) > 0 {
		c.mu.Lock()
		for _, e := range st.Events[:min(len(st.Events), MaxEventsPerStatus)] {
			if len(c.instEvents) < maxQueuedInstEvents {
				text, _ := termtext.Escape(e, maxInstEventBytes)
				c.instEvents = append(c.instEvents, instEvent{nodeID: nodeID, instanceID: st.InstanceId, text: text})
			}
		}
		c.mu.Unlock()
	}
	s := store.InstanceStatus{ID: st.InstanceId, NodeID: nodeID, SpecHash: st.SpecHash,
		State: api.InstanceState(st.State), Reason: st.Reason, ContainerID: st.ContainerId, ImageDigest: digest,
		Restarts: int(min(st.Restarts, math.MaxInt32)), At: at}
	c.runMu.Lock()
	running, ended := c.running, c.ended
	c.runMu.Unlock()
	if !running && (ended != nil || c.cfg.Cluster != nil) {
		// No run to write it: the last one ended (this replica's lease was
		// lost), or, on a replica that leads, none has begun, and its lease
		// may end before one does (a leader too loaded to read the nodes
		// in time): the status goes through the store to whoever leads,
		// this replica's run too, once it begins.
		c.handOver([]store.InstanceStatus{s})
		return
	}
	// One server, before its first run: the queue waits for it.
	select {
	case c.statuses <- s:
		select {
		case <-ended:
			// Sent as the run ended, perhaps after it handed the queue
			// over: hand over what is left.
			c.handOverQueued()
		default:
		}
	case <-ended:
		c.handOver([]store.InstanceStatus{s})
	case <-ctx.Done():
	}
}

// handOverQueued hands the statuses still queued to the next leader.
func (c *Controller) handOverQueued() {
	for {
		select {
		case st := <-c.statuses:
			c.handOver([]store.InstanceStatus{st})
		default:
			return
		}
	}
}

// handOver gives the next leader the status reports a run that ended
// (this replica's lease lost) did not write: the agents send a status
// once, and a rollout waits for it. One server that stops drops them; its
// agents send every status again when they reconnect.
func (c *Controller) handOver(batch []store.InstanceStatus) {
	if c.cfg.Cluster == nil {
		return
	}
	for _, st := range batch {
		c.cfg.Cluster.Report(st.NodeID, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: &agentproto.InstanceStatus{
			InstanceId: st.ID, State: string(st.State), Reason: st.Reason, ContainerId: st.ContainerID, SpecHash: st.SpecHash,
			ObservedAt: st.At.UnixNano(), ImageDigest: st.ImageDigest, Restarts: uint32(max(st.Restarts, 0))}}})
	}
}

// Status reports are written in batches: one transaction for all that came
// within statusBatchWindow, at most statusBatchMax. A rollout over thousands
// of nodes sends several reports per instance; one transaction each would
// make the store's write lock the limit.
const (
	statusBatchWindow = 20 * time.Millisecond
	statusBatchMax    = 1000
)

// maxPinChecked bounds pinChecked; past it the memory starts afresh.
const maxPinChecked = 200_000

// batchStatuses hands queued status reports to the run goroutine in
// batches until ctx ends. The run goroutine writes them, so that the store
// and its view see instance changes in the same order.
func (c *Controller) batchStatuses(ctx context.Context) {
	for {
		var batch []store.InstanceStatus
		select {
		case <-ctx.Done():
			return
		case st := <-c.statuses:
			batch = append(batch, st)
		}
		window := c.clock.After(statusBatchWindow)
	collect:
		for len(batch) < statusBatchMax {
			select {
			case st := <-c.statuses:
				batch = append(batch, st)
			case <-window:
				break collect
			case <-ctx.Done():
				break collect
			}
		}
		select {
		case c.batches <- batch:
		case <-ctx.Done():
			c.handOver(batch)
			return
		}
	}
}

// record writes a batch of status reports, mirrors into the view those the
// store took, and pins the digests they carry.
func (c *Controller) record(ctx context.Context, batch []store.InstanceStatus) {
	ok, err := c.store.UpdateInstanceStatuses(ctx, batch)
	if err != nil {
		// A run whose lease ended, or ended in the store before this
		// replica knew (the write was fenced off), hands its statuses to
		// the next leader.
		if ctx.Err() == nil && !errors.Is(err, store.ErrFenced) {
			c.log.Error("recording instance statuses", "count", len(batch), "err", err)
		} else {
			c.handOver(batch)
		}
		return
	}
	for i, st := range batch {
		if !ok[i] {
			continue
		}
		c.view.status(st)
		if st.ImageDigest != "" && !c.pinChecked[st.ID+"@"+st.ImageDigest] && c.pin(ctx, st.NodeID, st.ID, st.ImageDigest) {
			if len(c.pinChecked) > maxPinChecked {
				clear(c.pinChecked)
			}
			c.pinChecked[st.ID+"@"+st.ImageDigest] = true
		}
	}
	c.recordInstEvents(ctx)
	// A rollout may wait on these instances, and a drain too.
	c.mu.Lock()
	if c.draining {
		c.pending |= Place
	}
	c.mu.Unlock()
	c.Trigger()
}

// An agent's own actions on its instances become events. Bounds, as a
// hostile node may send any: what one status carries, the text of each, and
// what waits for record.
const (
	MaxEventsPerStatus  = 8
	maxInstEventBytes   = 200
	maxQueuedInstEvents = 1000
)

// instEvent is what an agent did on its own to one of its instances.
type instEvent struct{ nodeID, instanceID, text string }

// recordInstEvents writes the queued agent events of instances the view
// knows on the nodes that reported them; others are dropped.
func (c *Controller) recordInstEvents(ctx context.Context) {
	c.mu.Lock()
	queued := c.instEvents
	c.instEvents = nil
	c.mu.Unlock()
	names := map[string]string{}
	for _, e := range queued {
		if _, ok := names[e.nodeID]; !ok {
			names[e.nodeID] = c.live.Name(e.nodeID)
		}
	}
	var evs []api.Event
	now := c.clock.Now().UTC()
	for _, e := range queued {
		in := c.view.insts[e.instanceID]
		if in == nil || in.NodeID != e.nodeID {
			continue
		}
		typ := "instance.healed"
		if strings.HasSuffix(e.text, "restarted") {
			typ = "instance.restarted"
		}
		evs = append(evs, api.Event{Time: now, Project: in.Project, Deployment: in.Deployment, Type: typ,
			Message: fmt.Sprintf("instance %s on %s: %s", in.ID, cmp.Or(names[e.nodeID], e.nodeID), e.text)})
	}
	if len(evs) == 0 {
		return
	}
	if err := c.store.AppendEvents(ctx, evs); err != nil {
		c.log.Error("recording instance events", "count", len(evs), "err", err)
		return
	}
	c.notify()
}

var validStates = map[api.InstanceState]bool{
	api.InstancePending: true, api.InstancePulling: true, api.InstanceStarting: true, api.InstanceRunning: true,
	api.InstanceHealthy: true, api.InstanceUnhealthy: true, api.InstanceFailed: true, api.InstanceStopped: true,
}

// pin records the first digest an agent ran for a revision whose tag the
// server could not resolve at apply; every other node then pulls exactly it.
// Only the digest is taken from the report, and only when it is of the
// spec's own repository: the server writes the image reference, so no node
// can choose what the others run. A deployment whose image policy is not
// pinFromNodes takes no pin from nodes at all.
// It reports whether it could look at the report: not before the view knows
// the instance and its revision, nor when the store failed.
func (c *Controller) pin(ctx context.Context, nodeID, instanceID, reported string) bool {
	v := c.view
	in := v.insts[instanceID]
	if in == nil {
		return false
	}
	key := revKey(in.Project, in.Deployment, in.Revision)
	ri, ok := v.revs[key]
	switch {
	case in.Revision == 0:
		return true // runs nothing
	case !ok:
		return false
	case ri.rev.ImageDigest != "":
		return true // pinned at apply, or by an earlier report
	case cmp.Or(ri.rev.Spec.Spec.ImagePolicy, c.cfg.ImagePolicy) != spec.ImagePolicyPinFromNodes:
		return true // only the server pins, or no one
	}
	log := c.log.With("project", in.Project, "deployment", in.Deployment, "revision", in.Revision, "node_id", nodeID)
	digest, err := registry.Pin(ri.rev.Spec.Spec.Container.Image, reported)
	if err != nil {
		c.digestLog.Warn("not pinning the image digest a node reported", "project", in.Project, "deployment", in.Deployment,
			"revision", in.Revision, "node_id", nodeID, "instance_id", instanceID, "err", err)
		return true
	}
	nodeName := c.live.Name(nodeID)
	rev, err := c.store.PinRevisionDigest(ctx, in.Project, in.Deployment, in.Revision, digest, nodeID, nodeName)
	if err != nil {
		log.Error("pinning image digest", "instance_id", instanceID, "err", err)
		return false
	}
	if ri, err = newRevisionInfo(rev, c.digestLog.Warn); err != nil {
		log.Error("pinning image digest", "instance_id", instanceID, "err", err)
		return false
	}
	v.revs[key] = ri
	if rev.ImageDigest != digest {
		log.Warn("instance runs another digest than its revision pins", "instance_id", instanceID, "digest", digest, "pinned", rev.ImageDigest)
		return true
	}
	log.Info("image pinned", "digest", digest, "node_name", nodeName)
	c.store.AppendEvents(ctx, []api.Event{{Time: c.clock.Now().UTC(), Project: in.Project, Deployment: in.Deployment, Type: "image.pinned",
		Message: fmt.Sprintf("revision %d pinned to %s, as first pulled on node %s (ID %s): the server could not resolve the image at apply",
			in.Revision, digest, cmp.Or(nodeName, "?"), nodeID)}})
	c.notify()
	return true
}
