package controller

import (
	"maps"
	"math"
	"sort"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/fanout"
)

// MaxDesiredState is the largest desired state sent to one node. A node's
// desired state, all its instances' container specs, is one gRPC message:
// one over the agent's receive limit would end its stream at every attempt,
// and the node would get no update for any deployment. The server refuses
// at apply what would not fit and never sends what does not (push). It is
// below the 4 MiB that agents built before agentproto.MaxServerMessage
// take, with room for the message's own framing.
const MaxDesiredState = 3 << 20

// push computes the desired state of each node in dirty (every node if
// dirty is nil) and of each node with a pull request, now or at the last
// push, and sends the ones that changed. It builds and hashes them with no
// lock held: the fan-out's lock is only taken to compare and swap. Each
// state carries seq, the store's state sequence read after the view.
//
// The sequence is no part of a state's key: a change sends only the nodes
// it changes. The key has salt instead (readStateSeq), which accepting a
// restored state changes: every node is sent its state again, with the
// raised sequence.
func (c *Controller) push(dirty map[string]bool, pullReqs map[string][]string, seq, salt uint64) {
	var keySuffix string
	if salt != 0 {
		keySuffix = "/" + strconv.FormatUint(salt, 10)
	}
	v := c.view
	if dirty != nil {
		for id := range pullReqs {
			dirty[id] = true
		}
		for _, id := range c.out.Stale(maps.Keys(v.nodes)) {
			dirty[id] = true
		}
	}
	for id := range v.nodes {
		if dirty != nil && !dirty[id] {
			continue
		}
		var specs []*agentproto.InstanceSpec
		for _, in := range v.byNode[id] {
			ri, ok := v.revs.get(in.Project, in.Deployment, in.Revision)
			if !ok {
				continue // revision 0: nothing to run yet
			}
			specs = append(specs, &agentproto.InstanceSpec{Id: in.ID, Project: in.Project, Deployment: in.Deployment,
				Revision: in.Revision, SpecHash: ri.hash, Container: ri.container, StartFirst: ri.startFirst})
		}
		sort.Slice(specs, func(i, j int) bool { return specs[i].Id < specs[j].Id })
		pulls := pullReqs[id]
		key := fanout.Key(specs, pulls) + keySuffix
		if c.out.Unchanged(id, key) {
			continue
		}
		// The generation is fanout's to number; the largest one stands in
		// for it here, so the size checked is never below what is sent.
		d := &agentproto.DesiredState{Generation: math.MaxUint64, Instances: specs, PullImages: pulls, StateSeq: seq}
		if c.desiredTooLarge(id, d) {
			continue
		}
		c.out.Send(id, key, d)
	}
}

// desiredTooLarge reports, sparsely, a desired state over MaxDesiredState
// that the controller will not send: the apply check estimates, and
// placement can stack more instances on a node than it assumed.
func (c *Controller) desiredTooLarge(nodeID string, d *agentproto.DesiredState) bool {
	size := proto.Size(d)
	if size <= MaxDesiredState {
		return false
	}
	c.oversizeLog.Warn("not sending a node its desired state: it is over the size an agent takes in one message; the node keeps its previous one. "+
		"Make the container specs of its deployments smaller, or spread them over more nodes",
		"node_id", nodeID, "bytes", size, "max_bytes", MaxDesiredState, "instances", len(d.Instances))
	return true
}
