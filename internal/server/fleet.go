package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/placement"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// resyncInterval is how often placement runs with no trigger: it makes the
// controller level-triggered, and it notices replicated instances whose node
// has been unreachable past RescheduleAfter.
const resyncInterval = 15 * time.Second

// fleet is the server's in-memory view of its nodes: liveness, usage, the
// streams of connected agents and each node's last desired state. Heartbeats
// touch only this memory (DESIGN §8); the store gets state transitions and a
// batched "last seen" flush.
type fleet struct {
	s    *Server
	log  *slog.Logger
	wake chan struct{}

	mu    sync.Mutex
	nodes map[string]*liveNode
	// statuses queues instance status reports for writeStatuses.
	statuses chan store.InstanceStatus
	// pinChecked remembers the instance reports whose digest pin has
	// looked at, so a report repeated at every state change costs no
	// query; only writeStatuses touches it.
	pinChecked map[string]bool
	// pinned caches the revisions known to have an image digest.
	pinned map[string]bool
	// timer and timerAt schedule the next time-driven pass (a rollout's
	// minimum healthy time or deadline); one timer serves every rollout.
	timer   *time.Timer
	timerAt time.Time
	// pulls holds nodes' answers to pre-pull requests: node → image → result.
	pulls map[string]map[string]pullResult
	// gen numbers desired states. It starts from the clock so that numbers
	// keep growing across server restarts.
	gen uint64
}

type liveNode struct {
	state    api.NodeState
	lastSeen time.Time
	flushed  time.Time // lastSeen as last written to the store
	usage    api.Usage
	hostErr  string // the agent's last reported host problem, as stored
	session  *session
	desired  *agentproto.DesiredState
	key      string // digest of desired's instances, to skip unchanged pushes
	acked    uint64
}

func newFleet(ctx context.Context, s *Server) (*fleet, error) {
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	f := &fleet{s: s, log: s.log, wake: make(chan struct{}, 1), nodes: map[string]*liveNode{}, statuses: make(chan store.InstanceStatus, 4096), pinChecked: map[string]bool{}, pinned: map[string]bool{}, pulls: map[string]map[string]pullResult{}, gen: uint64(time.Now().UnixNano())}
	now := time.Now()
	for _, n := range nodes {
		// A restarted server gives every ready node a full liveness window to
		// reconnect before calling it unreachable.
		f.nodes[n.ID] = &liveNode{state: n.State, lastSeen: now, flushed: n.LastSeen, hostErr: n.Error}
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

// trigger asks the controller to run placement soon; calls coalesce.
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
	flush := time.NewTicker(5 * time.Second)
	defer flush.Stop()
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	f.trigger()
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
			if err := f.schedule(ctx); err != nil && ctx.Err() == nil {
				f.log.Error("placement failed; retrying", "err", err)
				time.AfterFunc(time.Second, f.trigger)
			}
		case <-resync.C:
			f.trigger()
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
		if n.state == api.NodeReady && now.Sub(n.lastSeen) > deadline {
			n.state = api.NodeUnreachable
			lost = append(lost, id)
		}
	}
	f.mu.Unlock()
	for _, id := range lost {
		f.log.Warn("node unreachable", "node_id", id, "missed_heartbeats", f.s.cfg.MissedHeartbeats)
		f.setState(ctx, id, api.NodeUnreachable)
	}
}

// setState writes a node's state transition to the store and reschedules.
func (f *fleet) setState(ctx context.Context, id string, state api.NodeState) {
	f.updateNode(ctx, id, func(n *api.Node) { n.State = state })
	f.trigger()
}

// updateNode applies edit to the stored node, retrying version races.
func (f *fleet) updateNode(ctx context.Context, id string, edit func(*api.Node)) {
	for attempt := 0; attempt < 5; attempt++ {
		n, err := f.s.store.GetNode(ctx, id)
		if err != nil {
			f.log.Error("reading node", "node_id", id, "err", err)
			return
		}
		f.mu.Lock()
		if ln := f.nodes[id]; ln != nil {
			n.LastSeen = ln.lastSeen
		}
		f.mu.Unlock()
		edit(&n)
		if _, err = f.s.store.UpdateNode(ctx, n); err == nil || !errors.Is(err, store.ErrConflict) {
			if err != nil {
				f.log.Error("updating node", "node_id", id, "err", err)
			}
			return
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

// schedule runs placement for every deployment, steps the active rollouts,
// then pushes each node whose desired state changed.
func (f *fleet) schedule(ctx context.Context) error {
	st := f.s.store
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return err
	}
	deps, err := st.ListDeployments(ctx, "")
	if err != nil {
		return err
	}
	all, err := st.ListInstances(ctx, store.InstanceFilter{})
	if err != nil {
		return err
	}
	revs, err := f.revisions(ctx, deps)
	if err != nil {
		return err
	}
	byDep := map[string][]api.Instance{}
	for _, i := range all {
		k := i.Project + "/" + i.Deployment
		byDep[k] = append(byDep[k], i)
	}

	now := time.Now()
	pnodes := make([]placement.Node, 0, len(nodes))
	f.mu.Lock()
	for _, n := range nodes {
		ln := f.nodes[n.ID]
		if ln == nil {
			ln = &liveNode{state: n.State, lastSeen: now}
			f.nodes[n.ID] = ln
		}
		pnodes = append(pnodes, placement.Node{ID: n.ID, Name: n.Name, Labels: n.Labels,
			Ready: ln.state == api.NodeReady,
			Lost:  ln.state != api.NodeReady && now.Sub(ln.lastSeen) > f.s.cfg.RescheduleAfter})
	}
	f.mu.Unlock()

	changed := false
	for _, d := range deps {
		k := d.Project + "/" + d.Name
		existing := byDep[k]
		delete(byDep, k)
		pex := make([]placement.Instance, len(existing))
		for i, in := range existing {
			pex[i] = placement.Instance{ID: in.ID, NodeID: in.NodeID}
		}
		plan := placement.Place(d.Spec.Spec, pnodes, pex)
		// New instances start on the stable revision (nothing, before the
		// first rollout completed); rollouts alone move instances forward.
		var add []api.Instance
		for _, nodeID := range plan.Add {
			add = append(add, api.Instance{ID: newID(), Project: d.Project, Deployment: d.Name, NodeID: nodeID,
				Revision: d.StableRevision, SpecHash: revs.hash(d.Project, d.Name, d.StableRevision),
				State: api.InstancePending, CreatedAt: now, UpdatedAt: now})
		}
		var remove []string
		for _, in := range plan.Remove {
			remove = append(remove, in.ID)
		}
		if err := st.ApplyPlacement(ctx, add, remove); err != nil {
			return err
		}
		if len(add)+len(remove) > 0 {
			changed = true
			f.log.Info("placed", "project", d.Project, "deployment", d.Name, "added", len(add), "removed", len(remove))
		}
	}
	// Instances whose deployment is gone (deleted mid-placement).
	var orphans []string
	for _, is := range byDep {
		for _, in := range is {
			orphans = append(orphans, in.ID)
		}
	}
	if len(orphans) > 0 {
		if err := st.ApplyPlacement(ctx, nil, orphans); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		if all, err = st.ListInstances(ctx, store.InstanceFilter{}); err != nil {
			return err
		}
	}
	moved, pullReqs, err := f.progress(ctx, nodes, deps, revs, all)
	if err != nil {
		return err
	}
	if moved {
		if all, err = st.ListInstances(ctx, store.InstanceFilter{}); err != nil {
			return err
		}
	}
	f.push(nodes, revs, all, pullReqs)
	return nil
}

// revisionSet holds the revisions of the deployments being scheduled.
type revisionSet map[string]revisionInfo

type revisionInfo struct {
	rev        api.Revision
	container  []byte // JSON of the container spec the agent runs
	hash       string
	startFirst bool
}

func revKey(project, name string, n int64) string { return fmt.Sprintf("%s/%s/%d", project, name, n) }

func (rs revisionSet) get(project, name string, n int64) (revisionInfo, bool) {
	ri, ok := rs[revKey(project, name, n)]
	return ri, ok
}

// hash is the spec hash of a revision; revision 0 (nothing) has none.
func (rs revisionSet) hash(project, name string, n int64) string {
	return rs[revKey(project, name, n)].hash
}

func (f *fleet) revisions(ctx context.Context, deps []api.Deployment) (revisionSet, error) {
	rs := revisionSet{}
	for _, d := range deps {
		revs, err := f.s.store.ListRevisions(ctx, d.Project, d.Name)
		if err != nil {
			return nil, err
		}
		for _, r := range revs {
			// Agents pull the pinned digest; the hash stays that of the spec,
			// so pinning never replaces a running container.
			c := r.Spec.Spec.Container
			if r.ImageDigest != "" {
				c.Image = r.ImageDigest
			}
			b, err := json.Marshal(c)
			if err != nil {
				return nil, err
			}
			rs[revKey(d.Project, d.Name, r.Number)] = revisionInfo{rev: r, container: b, hash: specHash(r.Spec.Spec.Container),
				startFirst: r.Spec.Spec.Update.Order == spec.OrderStartFirst}
		}
	}
	return rs, nil
}

// push computes each node's desired state and sends the ones that changed.
func (f *fleet) push(nodes []api.Node, revs revisionSet, all []api.Instance, pullReqs map[string][]string) {
	byNode := map[string][]*agentproto.InstanceSpec{}
	for _, in := range all {
		ri, ok := revs.get(in.Project, in.Deployment, in.Revision)
		if !ok {
			continue // revision 0: nothing to run yet
		}
		byNode[in.NodeID] = append(byNode[in.NodeID], &agentproto.InstanceSpec{
			Id: in.ID, Project: in.Project, Deployment: in.Deployment, Revision: in.Revision, SpecHash: ri.hash, Container: ri.container,
			StartFirst: ri.startFirst})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range nodes {
		ln := f.nodes[n.ID]
		specs := byNode[n.ID]
		sort.Slice(specs, func(i, j int) bool { return specs[i].Id < specs[j].Id })
		h := sha256.New()
		for _, s := range specs {
			h.Write([]byte(s.Id + "\x00" + s.SpecHash + "\x00"))
		}
		pulls := pullReqs[n.ID]
		for _, img := range pulls {
			h.Write([]byte("pull\x00" + img + "\x00"))
		}
		key := hex.EncodeToString(h.Sum(nil))
		if ln.desired != nil && key == ln.key {
			continue
		}
		f.gen++
		ln.desired, ln.key = &agentproto.DesiredState{Generation: f.gen, Instances: specs, PullImages: pulls}, key
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
	f.nodes[n.ID] = &liveNode{state: n.State, lastSeen: time.Now()}
	f.mu.Unlock()
	f.trigger()
}

// connect registers an agent's stream, replacing an older one of the same
// node, and queues the node's current desired state on it.
func (f *fleet) connect(ctx context.Context, nodeID string, hello *agentproto.Hello) *session {
	sess := newSession(nodeID)
	f.mu.Lock()
	ln := f.nodes[nodeID]
	if ln == nil {
		ln = &liveNode{state: api.NodeUnreachable}
		f.nodes[nodeID] = ln
	}
	if ln.session != nil {
		close(ln.session.done)
	}
	ln.session = sess
	ln.lastSeen = time.Now()
	wasReady := ln.state == api.NodeReady
	ln.state = api.NodeReady
	if ln.desired != nil {
		sess.push(ln.desired)
	}
	f.mu.Unlock()
	facts := factsFromProto(hello.Facts)
	f.updateNode(ctx, nodeID, func(n *api.Node) { n.State = api.NodeReady; n.Facts = facts })
	if !wasReady {
		f.log.Info("node ready", "node_id", nodeID)
	}
	f.trigger()
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
func (f *fleet) heartbeat(ctx context.Context, nodeID string, hb *agentproto.Heartbeat) {
	f.mu.Lock()
	ln := f.nodes[nodeID]
	if ln == nil {
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
	f.mu.Unlock()
	// The agent sends facts only when they changed; with the error kept in
	// memory, an ordinary heartbeat touches the store neither to read nor
	// to write.
	if !revived && !errChanged && hb.Facts == nil {
		return
	}
	if revived {
		f.log.Info("node ready", "node_id", nodeID)
	}
	f.updateNode(ctx, nodeID, func(n *api.Node) {
		n.State, n.Error = api.NodeReady, hb.Error
		if hb.Facts != nil {
			n.Facts = factsFromProto(hb.Facts)
		}
	})
	if revived {
		f.trigger()
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
	select {
	case f.statuses <- store.InstanceStatus{ID: st.InstanceId, NodeID: nodeID, SpecHash: st.SpecHash,
		State: api.InstanceState(st.State), Reason: st.Reason, ContainerID: st.ContainerId, ImageDigest: st.ImageDigest, At: at}:
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

// writeStatuses writes queued status reports until ctx ends.
func (f *fleet) writeStatuses(ctx context.Context) {
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
		ok, err := f.s.store.UpdateInstanceStatuses(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Error("recording instance statuses", "count", len(batch), "err", err)
			}
			continue
		}
		for i, st := range batch {
			if ok[i] && st.ImageDigest != "" && !f.pinChecked[st.ID+"@"+st.ImageDigest] {
				f.pin(ctx, st.NodeID, st.ID, st.ImageDigest)
				if len(f.pinChecked) > maxPinChecked {
					clear(f.pinChecked)
				}
				f.pinChecked[st.ID+"@"+st.ImageDigest] = true
			}
		}
		f.trigger() // a rollout may wait on these instances
	}
}

var validStates = map[api.InstanceState]bool{
	api.InstancePending: true, api.InstancePulling: true, api.InstanceStarting: true, api.InstanceRunning: true,
	api.InstanceHealthy: true, api.InstanceUnhealthy: true, api.InstanceFailed: true, api.InstanceStopped: true,
}

// pin records the first digest an agent ran for a revision whose tag the
// server could not resolve at apply; every other node then pulls exactly it.
func (f *fleet) pin(ctx context.Context, nodeID, instanceID, digest string) {
	is, err := f.s.store.ListInstances(ctx, store.InstanceFilter{NodeID: nodeID})
	if err != nil {
		return
	}
	for _, in := range is {
		if in.ID != instanceID || in.Revision == 0 {
			continue
		}
		key := revKey(in.Project, in.Deployment, in.Revision)
		f.mu.Lock()
		done := f.pinned[key]
		f.mu.Unlock()
		if done {
			return
		}
		pinned, err := f.s.store.PinRevisionDigest(ctx, in.Project, in.Deployment, in.Revision, digest)
		if err != nil {
			f.log.Error("pinning image digest", "instance_id", instanceID, "err", err)
			return
		}
		f.mu.Lock()
		f.pinned[key] = true
		f.mu.Unlock()
		if pinned != digest {
			f.log.Warn("instance runs another digest than its revision pins", "instance_id", instanceID, "digest", digest, "pinned", pinned)
			return
		}
		f.log.Info("image pinned", "project", in.Project, "deployment", in.Deployment, "revision", in.Revision, "digest", digest)
		f.s.store.AppendEvents(ctx, []api.Event{{Time: time.Now().UTC(), Project: in.Project, Deployment: in.Deployment, Type: "image.pinned",
			Message: fmt.Sprintf("revision %d pinned to %s, as first pulled on node %s", in.Revision, digest, nodeID)}})
		f.s.events.notify()
		return
	}
}
