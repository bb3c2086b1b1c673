package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/placement"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/termtext"
)

// minPassInterval spaces the passes that only agents asked for: status
// reports, connections and pre-pull answers. At 10,000 nodes a pass costs
// milliseconds, and a rollout's reports would otherwise start one every
// status batch; a pass for a change made through the API runs at once.
const minPassInterval = 100 * time.Millisecond

// restartGrace is how long a restarted server waits for its nodes to
// reconnect before their silence counts (liveNode.grace). Agents come back
// with jittered backoff of up to 30 s, and on 2 cores 19,000 of them took
// a minute (BENCHMARKS.md); without it, a restart alone would mark them
// unreachable and move their replicated instances.
const restartGrace = time.Minute

// silence is how long the node has been silent, as far as liveness counts.
func (n *liveNode) silence(now time.Time) time.Duration {
	return now.Sub(later(n.lastSeen, n.grace))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// lastSeenFlushInterval is how often the heartbeat times that changed are
// written to the store. Memory is what counts (the API and liveness read
// it); the store's copy is for after a restart, and a node's state change
// writes its time at once. Every few seconds, at 10,000 nodes, the flush
// alone was a sixth of the server's idle CPU.
const lastSeenFlushInterval = time.Minute

// resyncInterval is how often placement runs with no trigger: it notices
// replicated instances whose node has been unreachable past
// RescheduleAfter. reloadInterval is how often the controller reads its
// whole view again from the store, which keeps it level-triggered: a bug
// in what it mirrors lasts a minute at most. At 10,000 nodes a reload costs
// a good part of a second of CPU.
const (
	resyncInterval = 15 * time.Second
	reloadInterval = time.Minute
)

// fleet is the server's in-memory view of its nodes: liveness, usage, the
// streams of connected agents and each node's last desired state. Heartbeats
// touch only this memory (DESIGN §8); the store gets state transitions and a
// batched "last seen" flush.
type fleet struct {
	s    *Server
	log  *slog.Logger
	wake chan struct{}

	// view and pinChecked belong to the run goroutine.
	view *view
	// pinChecked remembers the instance reports whose digest pin has
	// looked at, so a report repeated at every state change costs nothing.
	pinChecked map[string]bool
	// digestLog warns of digests nodes report that cannot be pinned, and
	// of invalid pins in the store; a hostile node can send many.
	digestLog *sparseLog

	// statuses queues instance status reports; batchStatuses hands them
	// to the run goroutine in batches.
	statuses chan store.InstanceStatus
	batches  chan []store.InstanceStatus

	mu    sync.Mutex
	nodes map[string]*liveNode
	// pending is the work the next pass must do besides stepping rollouts.
	pending work
	// joined holds nodes enrolled since the last pass, for the view.
	joined []api.Node
	// nodeWrites holds the nodes whose state, host error or facts changed
	// since writeNodes last wrote them, with their new facts if any.
	nodeWrites map[string]*api.Facts
	nodeWrote  chan struct{}
	// timer and timerAt schedule the next time-driven pass (a rollout's
	// minimum healthy time or deadline); one timer serves every rollout.
	timer   *time.Timer
	timerAt time.Time
	// pulls holds the pre-pull requests of rollouts in pre-pull and their
	// answers: node → image → result (trackPulls).
	pulls          map[string]map[string]pullResult
	unaskedPullLog *sparseLog
	oversizeLog    *sparseLog
	// instEvents holds what agents did on their own to their instances
	// (restarted, recreated), for record to write as events.
	instEvents []instEvent
	// draining says that a node is draining and runs instances still.
	draining bool
	// gen numbers desired states. It starts from the clock so that numbers
	// keep growing across server restarts.
	gen uint64
}

type liveNode struct {
	name     string
	state    api.NodeState
	lastSeen time.Time
	// grace, for the nodes a restarted server loaded from the store, is
	// when their silence starts to count: the whole fleet reconnects at
	// once, and the last agents of a large one come back a minute later.
	grace   time.Time
	flushed time.Time // lastSeen as last written to the store
	usage   api.Usage
	hostErr string // the agent's last reported host problem, as stored
	session *session
	desired *agentproto.DesiredState
	key     string // digest of desired's instances, to skip unchanged pushes
	acked   uint64
}

func newFleet(ctx context.Context, s *Server) (*fleet, error) {
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	f := &fleet{s: s, log: s.log, wake: make(chan struct{}, 1), view: newView(), pinChecked: map[string]bool{}, digestLog: newSparseLog(s.log),
		statuses: make(chan store.InstanceStatus, 4096), batches: make(chan []store.InstanceStatus),
		nodes: map[string]*liveNode{}, pending: reloadAll, nodeWrites: map[string]*api.Facts{}, nodeWrote: make(chan struct{}, 1), pulls: map[string]map[string]pullResult{}, unaskedPullLog: newSparseLog(s.log), oversizeLog: newSparseLog(s.log), gen: uint64(time.Now().UnixNano())}
	now := time.Now()
	for _, n := range nodes {
		f.nodes[n.ID] = &liveNode{name: n.Name, state: n.State, lastSeen: n.LastSeen, grace: now.Add(restartGrace), flushed: n.LastSeen, hostErr: n.Error}
	}
	return f, nil
}

// wakeAt asks for a pass at t at the latest.
func (f *fleet) wakeAt(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timer != nil && !f.timerAt.After(t) && f.timerAt.After(time.Now()) {
		return // an earlier wake is already set
	}
	if f.timer != nil {
		f.timer.Stop()
	}
	f.timerAt = t
	f.timer = time.AfterFunc(time.Until(t), f.trigger)
}

// need asks the next pass to do w; it also triggers one.
func (f *fleet) need(w work) {
	f.mu.Lock()
	f.pending |= w
	f.mu.Unlock()
	f.trigger()
}

// trigger asks the controller for a pass soon: it steps the active
// rollouts and pushes what changed. Calls coalesce.
func (f *fleet) trigger() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *fleet) run(ctx context.Context) {
	interval := f.s.cfg.HeartbeatInterval
	check := time.NewTicker(max(interval/4, 50*time.Millisecond))
	defer check.Stop()
	flush := time.NewTicker(lastSeenFlushInterval)
	defer flush.Stop()
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	reload := time.NewTicker(reloadInterval)
	defer reload.Stop()
	f.trigger()
	var last time.Time // the last pass
	defer func() {
		f.mu.Lock()
		if f.timer != nil {
			f.timer.Stop()
		}
		f.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
			f.mu.Lock()
			changed := f.pending&(reloadNodes|reloadDeployments|reloadInstances) != 0
			f.mu.Unlock()
			if next := last.Add(minPassInterval); !changed && time.Now().Before(next) {
				f.wakeAt(next)
				continue
			}
			last = time.Now()
			if err := f.schedule(ctx); err != nil && ctx.Err() == nil {
				f.log.Error("placement failed; retrying", "err", err)
				// What failed may have left the view unlike the store.
				f.mu.Lock()
				f.pending |= reloadAll
				f.mu.Unlock()
				time.AfterFunc(time.Second, f.trigger)
			}
		case batch := <-f.batches:
			f.record(ctx, batch)
		case <-resync.C:
			f.need(place)
		case <-reload.C:
			f.need(reloadAll)
		case <-check.C:
			f.checkLiveness(ctx)
		case <-flush.C:
			f.flush(ctx)
		}
	}
}

// checkLiveness marks ready nodes whose heartbeats stopped unreachable.
func (f *fleet) checkLiveness(ctx context.Context) {
	deadline := time.Duration(f.s.cfg.MissedHeartbeats) * f.s.cfg.HeartbeatInterval
	now := time.Now()
	var lost []string
	f.mu.Lock()
	for id, n := range f.nodes {
		if n.state == api.NodeReady && n.silence(now) > deadline {
			n.state = api.NodeUnreachable
			lost = append(lost, id)
		}
	}
	f.mu.Unlock()
	for _, id := range lost {
		f.log.Warn("node unreachable", "node_id", id, "missed_heartbeats", f.s.cfg.MissedHeartbeats)
		f.setState(id, api.NodeUnreachable)
	}
}

// setState records a node's state transition and reschedules.
func (f *fleet) setState(id string, state api.NodeState) {
	f.mu.Lock()
	f.noteNode(id, nil)
	f.mu.Unlock()
	f.need(place)
}

// noteNode queues node id's state and host error, as memory holds them,
// and its facts if given, for writeNodes. Callers hold f.mu.
func (f *fleet) noteNode(id string, facts *api.Facts) {
	if old, ok := f.nodeWrites[id]; ok && facts == nil {
		facts = old
	}
	f.nodeWrites[id] = facts
	select {
	case f.nodeWrote <- struct{}{}:
	default:
	}
}

// nodeWriteWindow gathers node changes into one transaction: after a
// server restart thousands of agents reconnect within seconds, and a write
// each would queue them all on the store's lock.
const nodeWriteWindow = 50 * time.Millisecond

// writeNodes writes queued node changes until ctx ends. The store's copy
// of a node's state is for the API and for the next server start; the
// controller itself goes by memory.
func (f *fleet) writeNodes(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.nodeWrote:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(nodeWriteWindow):
		}
		f.mu.Lock()
		ss := make([]store.NodeStatus, 0, len(f.nodeWrites))
		for id, facts := range f.nodeWrites {
			if ln := f.nodes[id]; ln != nil {
				ss = append(ss, store.NodeStatus{ID: id, State: ln.state, Error: ln.hostErr, LastSeen: ln.lastSeen, Facts: facts})
			}
		}
		clear(f.nodeWrites)
		f.mu.Unlock()
		if err := f.s.store.UpdateNodeStatuses(ctx, ss); err != nil && ctx.Err() == nil {
			f.log.Error("recording node states", "count", len(ss), "err", err)
			// Try again: memory still holds the latest of each.
			f.mu.Lock()
			for _, st := range ss {
				if _, queued := f.nodeWrites[st.ID]; !queued {
					f.nodeWrites[st.ID] = st.Facts
				}
			}
			f.mu.Unlock()
			time.AfterFunc(time.Second, func() {
				select {
				case f.nodeWrote <- struct{}{}:
				default:
				}
			})
		}
	}
}

// flush writes the heartbeat times that changed since the last flush.
func (f *fleet) flush(ctx context.Context) {
	seen := map[string]time.Time{}
	f.mu.Lock()
	for id, n := range f.nodes {
		if n.lastSeen.After(n.flushed) {
			seen[id] = n.lastSeen
		}
	}
	f.mu.Unlock()
	if err := f.s.store.SetLastSeen(ctx, seen); err != nil {
		f.log.Error("flushing last seen times", "err", err)
		return
	}
	f.mu.Lock()
	for id, t := range seen {
		if n := f.nodes[id]; n != nil {
			n.flushed = t
		}
	}
	f.mu.Unlock()
}

// names fills in the node names of instances.
func (f *fleet) names(is []api.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range is {
		if ln := f.nodes[is[i].NodeID]; ln != nil {
			is[i].NodeName = ln.name
		}
	}
}

// live fills in what only memory knows of a node: its latest heartbeat and usage.
func (f *fleet) live(n *api.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ln := f.nodes[n.ID]; ln != nil {
		if ln.lastSeen.After(n.LastSeen) {
			n.LastSeen = ln.lastSeen
		}
		n.Usage = ln.usage
		n.State = ln.state
	}
}

// schedule is one pass of the controller: it brings the view up to date,
// places instances if something placement reads changed, steps the active
// rollouts, and pushes each node whose desired state changed.
func (f *fleet) schedule(ctx context.Context) error {
	f.mu.Lock()
	w, joined := f.pending, f.joined
	f.pending, f.joined = 0, nil
	f.mu.Unlock()
	v := f.view
	if err := v.reload(ctx, f.s.store, w, f.digestLog.warn); err != nil {
		return err
	}
	for _, n := range joined {
		v.nodes[n.ID] = n
	}
	// dirty holds the nodes whose desired state may have changed; nil
	// means all of them.
	dirty := map[string]bool{}
	if w&(reloadDeployments|reloadInstances) != 0 {
		dirty = nil
	}
	mark := func(nodeID string) {
		if dirty != nil {
			dirty[nodeID] = true
		}
	}
	for _, n := range joined {
		mark(n.ID)
	}
	if w&place != 0 {
		if err := f.place(ctx, mark); err != nil {
			return err
		}
	}
	pullReqs, err := f.progress(ctx, mark)
	if err != nil {
		return err
	}
	f.push(dirty, pullReqs)
	return nil
}

// place runs placement for every deployment and writes the instances it
// adds and removes, marking their nodes.
func (f *fleet) place(ctx context.Context, mark func(nodeID string)) error {
	v, st := f.view, f.s.store
	now := time.Now()
	pnodes := make([]placement.Node, 0, len(v.nodes))
	f.mu.Lock()
	for _, n := range v.nodes {
		ln := f.nodes[n.ID]
		if ln == nil {
			ln = &liveNode{state: n.State, lastSeen: now}
			f.nodes[n.ID] = ln
		}
		ln.name = n.Name
		draining := n.Scheduling == api.NodeDraining || n.Scheduling == api.NodeDrained
		pnodes = append(pnodes, placement.Node{ID: n.ID, Name: n.Name, Labels: n.Labels,
			Ready: ln.state == api.NodeReady,
			// A revoked node is lost at once: it will not come back.
			Lost:     ln.state == api.NodeRevoked || ln.state != api.NodeReady && ln.silence(now) > f.s.cfg.RescheduleAfter,
			Cordoned: n.Scheduling == api.NodeCordoned, Draining: draining,
			DrainGlobal: draining && !f.runsReplicated(n.ID)})
	}
	f.mu.Unlock()
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
				pex = append(pex, f.placementInstance(in, ready[in.NodeID]))
			}
		}
		plan := placement.Place(d.Spec.Spec, pnodes, pex)
		// New instances start on the stable revision (nothing, before the
		// first rollout completed); rollouts alone move instances forward.
		for _, nodeID := range plan.Add {
			add = append(add, api.Instance{ID: newID(), Project: d.Project, Deployment: d.Name, NodeID: nodeID,
				Revision: d.StableRevision, SpecHash: v.revs.hash(d.Project, d.Name, d.StableRevision),
				State: api.InstancePending, CreatedAt: now, UpdatedAt: now, Version: 1})
		}
		for _, in := range plan.Remove {
			remove = append(remove, in.ID)
		}
		if len(plan.Add)+len(plan.Remove) > 0 {
			f.log.Info("placed", "project", d.Project, "deployment", d.Name, "added", len(plan.Add), "removed", len(plan.Remove))
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
	return f.drained(ctx, len(remove) > 0)
}

// runsReplicated reports whether node id still runs an instance of a
// replicated deployment: until it does not, a drain keeps its global ones.
func (f *fleet) runsReplicated(id string) bool {
	v := f.view
	for _, in := range v.byNode[id] {
		if d, ok := v.deps[depKey(in.Project, in.Deployment)]; ok && d.Spec.Spec.Mode == spec.ModeReplicated {
			return true
		}
	}
	return false
}

// placementInstance is in as placement sees it: up when it serves on a
// ready node, as a rollout counts it, settled when it is up or failed.
func (f *fleet) placementInstance(in *api.Instance, ready bool) placement.Instance {
	ri, _ := f.view.revs.get(in.Project, in.Deployment, in.Revision)
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
func (f *fleet) drained(ctx context.Context, removed bool) error {
	v := f.view
	active := false
	for id, n := range v.nodes {
		if n.Scheduling != api.NodeDraining {
			continue
		}
		if len(v.byNode[id]) > 0 {
			active = true
			continue
		}
		n, err := f.s.store.SetNodeScheduling(ctx, id, []api.NodeScheduling{api.NodeDraining}, api.NodeDrained)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed meanwhile; the next reload forgets it
		}
		if err != nil {
			return fmt.Errorf("marking node %s drained: %w", id, err)
		}
		v.nodes[id] = n
		if n.Scheduling == api.NodeDrained {
			f.log.Info("node drained", "node_id", id, "name", n.Name)
		}
	}
	f.mu.Lock()
	f.draining = active
	if active && removed {
		f.pending |= place
	}
	f.mu.Unlock()
	if active && removed {
		f.trigger()
	}
	return nil
}

// push computes the desired state of each node in dirty (every node if
// dirty is nil) and of each node with a pull request, now or at the last
// push, and sends the ones that changed.
func (f *fleet) push(dirty map[string]bool, pullReqs map[string][]string) {
	v := f.view
	f.mu.Lock()
	defer f.mu.Unlock()
	if dirty != nil {
		for id := range pullReqs {
			dirty[id] = true
		}
		for id, ln := range f.nodes {
			if ln.desired == nil || len(ln.desired.PullImages) > 0 {
				dirty[id] = true
			}
		}
	}
	for id, ln := range f.nodes {
		if dirty != nil && !dirty[id] {
			continue
		}
		if _, ok := v.nodes[id]; !ok {
			continue // enrolled after this pass began; the next one pushes it
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
		h := sha256.New()
		for _, s := range specs {
			h.Write([]byte(s.Id + "\x00" + s.SpecHash + "\x00"))
		}
		pulls := pullReqs[id]
		for _, img := range pulls {
			h.Write([]byte("pull\x00" + img + "\x00"))
		}
		key := hex.EncodeToString(h.Sum(nil))
		if ln.desired != nil && key == ln.key {
			continue
		}
		d := &agentproto.DesiredState{Generation: f.gen + 1, Instances: specs, PullImages: pulls}
		if f.desiredTooLarge(id, d) {
			continue
		}
		f.gen++
		ln.desired, ln.key = d, key
		if ln.session != nil {
			ln.session.push(ln.desired)
		}
	}
}

// newID returns a random 16-hex-digit identifier for nodes and instances.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// enrolled registers a newly enrolled node; it has a liveness window to connect.
func (f *fleet) enrolled(n api.Node) {
	f.mu.Lock()
	f.nodes[n.ID] = &liveNode{name: n.Name, state: n.State, lastSeen: time.Now()}
	f.joined = append(f.joined, n)
	f.pending |= place
	f.mu.Unlock()
	f.trigger()
}

// enrolledNode checks that node id is enrolled: in memory, which knows
// every node this server enrolled or loaded, or else in the store.
func (f *fleet) enrolledNode(ctx context.Context, id string) error {
	f.mu.Lock()
	_, ok := f.nodes[id]
	f.mu.Unlock()
	if ok {
		return nil
	}
	_, err := f.s.store.GetNode(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.PermissionDenied, "node %s is not enrolled with this server", id)
	case err != nil:
		f.log.Error("reading node", "node_id", id, "err", err)
		return status.Error(codes.Unavailable, "reading the node failed; retrying is safe")
	}
	return nil
}

// revoked records that node id was revoked: its instances are lost.
func (f *fleet) revoked(id string) {
	f.mu.Lock()
	if ln := f.nodes[id]; ln != nil {
		ln.state = api.NodeRevoked
	}
	f.mu.Unlock()
	f.need(reloadNodes | place)
}

// removed forgets node id, which the store no longer has: its instances
// are gone, and placement moves what they ran.
func (f *fleet) removed(id string) {
	f.mu.Lock()
	delete(f.nodes, id)
	f.mu.Unlock()
	f.need(reloadNodes | reloadInstances | place)
}

// connected reports whether node id has a stream open.
func (f *fleet) connected(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ln := f.nodes[id]
	return ln != nil && ln.session != nil
}

// connect registers an agent's stream, replacing an older one of the same
// node, and queues the node's current desired state on it.
func (f *fleet) connect(nodeID string, hello *agentproto.Hello) *session {
	sess := newSession(nodeID)
	f.mu.Lock()
	ln := f.nodes[nodeID]
	if ln == nil {
		ln = &liveNode{state: api.NodeUnreachable}
		f.nodes[nodeID] = ln
	}
	if ln.session != nil {
		ln.session.fail(errReplaced)
	}
	ln.session = sess
	ln.lastSeen = time.Now()
	wasReady := ln.state == api.NodeReady
	if ln.state != api.NodeRevoked { // a stream that raced its node's revocation
		ln.state = api.NodeReady
	}
	if ln.desired != nil {
		sess.push(ln.desired)
	}
	facts := factsFromProto(hello.Facts)
	f.noteNode(nodeID, &facts)
	f.mu.Unlock()
	if !wasReady {
		f.log.Info("node ready", "node_id", nodeID)
		f.need(place)
	}
	return sess
}

func (f *fleet) disconnect(sess *session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ln := f.nodes[sess.nodeID]; ln != nil && ln.session == sess {
		ln.session = nil
	}
}

// heartbeat records a node's liveness and usage in memory; only a change of
// state, facts or error reaches the store.
func (f *fleet) heartbeat(nodeID string, hb *agentproto.Heartbeat) {
	f.mu.Lock()
	ln := f.nodes[nodeID]
	if ln == nil || ln.state == api.NodeRevoked {
		f.mu.Unlock()
		return
	}
	ln.lastSeen = time.Now()
	if u := hb.Usage; u != nil {
		ln.usage = api.Usage{CPUPercent: u.CpuPercent, MemoryBytes: u.MemoryBytes, Containers: int(u.Containers)}
	}
	revived := ln.state != api.NodeReady
	errChanged := ln.hostErr != hb.Error
	ln.state, ln.hostErr = api.NodeReady, hb.Error
	// The agent sends facts only when they changed; with the error kept in
	// memory, an ordinary heartbeat touches the store neither to read nor
	// to write.
	if revived || errChanged || hb.Facts != nil {
		var facts *api.Facts
		if hb.Facts != nil {
			fs := factsFromProto(hb.Facts)
			facts = &fs
		}
		f.noteNode(nodeID, facts)
	}
	f.mu.Unlock()
	if revived {
		f.log.Info("node ready", "node_id", nodeID)
		f.need(place)
	}
}

func (f *fleet) ack(nodeID string, gen uint64) {
	f.mu.Lock()
	if ln := f.nodes[nodeID]; ln != nil && gen > ln.acked {
		ln.acked = gen
	}
	f.mu.Unlock()
}

// status queues an agent's report on one of its instances for the status
// writer. A full queue holds the agent's stream back, which is the
// backpressure we want; a report lost to a crash is sent again by the agent
// in the hello of its next connection.
func (f *fleet) status(ctx context.Context, nodeID string, st *agentproto.InstanceStatus) {
	if !validStates[api.InstanceState(st.State)] {
		f.log.Warn("ignoring instance status with an unknown state", "node_id", nodeID, "instance_id", st.InstanceId, "state", st.State)
		return
	}
	at := time.Unix(0, st.ObservedAt).UTC()
	if st.ObservedAt == 0 {
		at = time.Now().UTC()
	}
	// Only a digest is worth keeping (and pinning): anything else a
	// node sends in its place is dropped here, before it is stored.
	digest := st.ImageDigest
	if digest != "" {
		if _, _, err := registry.ParseDigest(digest); err != nil {
			f.digestLog.warn("ignoring the image digest a node reported", "node_id", nodeID, "instance_id", st.InstanceId, "err", err)
			digest = ""
		}
	}
	if len(st.Events) > 0 {
		f.mu.Lock()
		for _, e := range st.Events[:min(len(st.Events), maxEventsPerStatus)] {
			if len(f.instEvents) < maxQueuedInstEvents {
				text, _ := termtext.Escape(e, maxInstEventBytes)
				f.instEvents = append(f.instEvents, instEvent{nodeID: nodeID, instanceID: st.InstanceId, text: text})
			}
		}
		f.mu.Unlock()
	}
	select {
	case f.statuses <- store.InstanceStatus{ID: st.InstanceId, NodeID: nodeID, SpecHash: st.SpecHash,
		State: api.InstanceState(st.State), Reason: st.Reason, ContainerID: st.ContainerId, ImageDigest: digest,
		Restarts: int(min(st.Restarts, math.MaxInt32)), At: at}:
	case <-ctx.Done():
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
func (f *fleet) batchStatuses(ctx context.Context) {
	for {
		var batch []store.InstanceStatus
		select {
		case <-ctx.Done():
			return
		case st := <-f.statuses:
			batch = append(batch, st)
		}
		window := time.After(statusBatchWindow)
	collect:
		for len(batch) < statusBatchMax {
			select {
			case st := <-f.statuses:
				batch = append(batch, st)
			case <-window:
				break collect
			case <-ctx.Done():
				break collect
			}
		}
		select {
		case f.batches <- batch:
		case <-ctx.Done():
			return
		}
	}
}

// record writes a batch of status reports, mirrors into the view those the
// store took, and pins the digests they carry.
func (f *fleet) record(ctx context.Context, batch []store.InstanceStatus) {
	ok, err := f.s.store.UpdateInstanceStatuses(ctx, batch)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Error("recording instance statuses", "count", len(batch), "err", err)
		}
		return
	}
	for i, st := range batch {
		if !ok[i] {
			continue
		}
		f.view.status(st)
		if st.ImageDigest != "" && !f.pinChecked[st.ID+"@"+st.ImageDigest] && f.pin(ctx, st.NodeID, st.ID, st.ImageDigest) {
			if len(f.pinChecked) > maxPinChecked {
				clear(f.pinChecked)
			}
			f.pinChecked[st.ID+"@"+st.ImageDigest] = true
		}
	}
	f.recordInstEvents(ctx)
	// A rollout may wait on these instances, and a drain too.
	f.mu.Lock()
	if f.draining {
		f.pending |= place
	}
	f.mu.Unlock()
	f.trigger()
}

// An agent's own actions on its instances become events. Bounds, as a
// hostile node may send any: what one status carries, the text of each, and
// what waits for record.
const (
	maxEventsPerStatus  = 8
	maxInstEventBytes   = 200
	maxQueuedInstEvents = 1000
)

// instEvent is what an agent did on its own to one of its instances.
type instEvent struct{ nodeID, instanceID, text string }

// recordInstEvents writes the queued agent events of instances the view
// knows on the nodes that reported them; others are dropped.
func (f *fleet) recordInstEvents(ctx context.Context) {
	f.mu.Lock()
	queued := f.instEvents
	f.instEvents = nil
	names := map[string]string{}
	for _, e := range queued {
		if ln := f.nodes[e.nodeID]; ln != nil {
			names[e.nodeID] = ln.name
		}
	}
	f.mu.Unlock()
	var evs []api.Event
	now := time.Now().UTC()
	for _, e := range queued {
		in := f.view.insts[e.instanceID]
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
	if err := f.s.store.AppendEvents(ctx, evs); err != nil {
		f.log.Error("recording instance events", "count", len(evs), "err", err)
		return
	}
	f.s.events.notify()
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
func (f *fleet) pin(ctx context.Context, nodeID, instanceID, reported string) bool {
	v := f.view
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
	case cmp.Or(ri.rev.Spec.Spec.ImagePolicy, f.s.cfg.ImagePolicy) != spec.ImagePolicyPinFromNodes:
		return true // only the server pins, or no one
	}
	log := f.log.With("project", in.Project, "deployment", in.Deployment, "revision", in.Revision, "node_id", nodeID)
	digest, err := registry.Pin(ri.rev.Spec.Spec.Container.Image, reported)
	if err != nil {
		f.digestLog.warn("not pinning the image digest a node reported", "project", in.Project, "deployment", in.Deployment,
			"revision", in.Revision, "node_id", nodeID, "instance_id", instanceID, "err", err)
		return true
	}
	f.mu.Lock()
	var nodeName string
	if ln := f.nodes[nodeID]; ln != nil {
		nodeName = ln.name
	}
	f.mu.Unlock()
	rev, err := f.s.store.PinRevisionDigest(ctx, in.Project, in.Deployment, in.Revision, digest, nodeID, nodeName)
	if err != nil {
		log.Error("pinning image digest", "instance_id", instanceID, "err", err)
		return false
	}
	if ri, err = newRevisionInfo(rev, f.digestLog.warn); err != nil {
		log.Error("pinning image digest", "instance_id", instanceID, "err", err)
		return false
	}
	v.revs[key] = ri
	if rev.ImageDigest != digest {
		log.Warn("instance runs another digest than its revision pins", "instance_id", instanceID, "digest", digest, "pinned", rev.ImageDigest)
		return true
	}
	log.Info("image pinned", "digest", digest, "node_name", nodeName)
	f.s.store.AppendEvents(ctx, []api.Event{{Time: time.Now().UTC(), Project: in.Project, Deployment: in.Deployment, Type: "image.pinned",
		Message: fmt.Sprintf("revision %d pinned to %s, as first pulled on node %s (ID %s): the server could not resolve the image at apply",
			in.Revision, digest, cmp.Or(nodeName, "?"), nodeID)}})
	f.s.events.notify()
	return true
}
