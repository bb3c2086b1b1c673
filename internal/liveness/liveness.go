// Package liveness is the server's registry of live nodes: each node's
// state (ready, unreachable, revoked), when it was last heard from, its
// usage and its host error. Heartbeats touch only this memory (DESIGN §8);
// the store gets state transitions and a batched "last seen" flush.
//
// The registry has its own lock, which nothing else shares: a heartbeat
// waits for no controller pass and no fan-out. Its time comes from an
// injected clock, so tests move time instead of sleeping. A node that
// becomes ready or unreachable is reported through Config.OnChange, for
// the controller to place again.
package liveness

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// RestartGrace is how long a restarted server waits for its nodes to
// reconnect before their silence counts (node.grace). Agents come back
// with jittered backoff of up to 30 s, and on 2 cores 19,000 of them took
// a minute (BENCHMARKS.md); without it, a restart alone would mark them
// unreachable and move their replicated instances.
const RestartGrace = time.Minute

// StartupGrace is how long a newly enrolled node has to connect before its
// silence counts, as Kubernetes gives a starting node (its
// --node-startup-grace-period): an agent connects right after it enrolls,
// but thousands enrolling at once on a busy server take seconds each, and
// a node that never connected is not one that was lost.
const StartupGrace = time.Minute

// LastSeenFlushInterval is how often the heartbeat times that changed are
// written to the store, with the usage of the nodes connected here. Memory
// is what counts (the API and liveness read it); the store's copy is for
// after a restart, and for the other replicas' API (usage up to this old),
// and a node's state change writes its time at once. Every few seconds, at 10,000 nodes, the flush
// alone was a sixth of the server's idle CPU.
const LastSeenFlushInterval = time.Minute

// nodeWriteWindow gathers node changes into one transaction: after a
// server restart thousands of agents reconnect within seconds, and a write
// each would queue them all on the store's lock.
const nodeWriteWindow = 50 * time.Millisecond

// Config is what a Registry needs besides its store.
type Config struct {
	// HeartbeatInterval is how often agents send heartbeats, and
	// MissedHeartbeats how many missed ones make a node unreachable.
	HeartbeatInterval time.Duration
	MissedHeartbeats  int
	// Clock is the registry's time; nil is the real clock.
	Clock clockwork.Clock
	// Logger gets state transitions; nil discards them.
	Logger *slog.Logger
	// OnChange, if set, is called, without the registry's lock held,
	// when node id becomes ready or unreachable.
	OnChange func(id string)
	// OnEmptied, if set, is called, without the registry's lock held,
	// when node id reports running no container after running some: a
	// drain waits for that.
	OnEmptied func(id string)
	// Replica says that this server is one replica of several: it judges
	// liveness only while it leads, from its Resume to its Follow; the
	// others record what the agents connected to them say, and take the
	// nodes' states from the store. One server always judges.
	Replica bool
}

// Registry holds the live nodes. Its methods are safe for concurrent use.
type Registry struct {
	cfg   Config
	clock clockwork.Clock
	log   *slog.Logger
	store store.Store

	mu    sync.Mutex
	nodes map[string]*node
	// writes holds the nodes whose state, host error or facts changed
	// since writeNodes last wrote them, with their new facts if any.
	writes map[string]*api.Facts
	wrote  chan struct{}
	// judging says that this server judges liveness (Config.Replica).
	judging bool
	// presence is when the leader of several replicas last read which
	// replica holds each node's stream (Present): what it knows of the
	// nodes with no stream here is that old.
	presence time.Time
}

type node struct {
	name     string
	state    api.NodeState
	lastSeen time.Time
	// grace, for the nodes a restarted server loaded from the store, is
	// when their silence starts to count: the whole fleet reconnects at
	// once, and the last agents of a large one come back a minute later.
	// starting says it is a new node's (StartupGrace), which ends when the
	// node is first heard from.
	grace    time.Time
	starting bool
	flushed  time.Time // lastSeen as last written to the store
	usage    api.Usage
	// reported says that usage came from a heartbeat of this process, not
	// from nothing: a node the server just loaded runs what it ran.
	reported bool
	hostErr  string // the agent's last reported host problem, as stored
	// streams counts the node's agent streams open on this server.
	streams int
	// busy counts the messages of the node's agent this server is still
	// handling (Busy): its own slowness is not the agent's silence.
	busy int
}

// silence is how long the node has been silent, as far as liveness counts.
func (n *node) silence(now time.Time) time.Duration {
	if n.busy > 0 {
		return 0
	}
	return now.Sub(later(n.lastSeen, n.grace))
}

// heard records that the node was heard from at now; a new node's grace
// ends with it.
func (n *node) heard(now time.Time) {
	n.lastSeen = now
	if n.starting {
		n.grace, n.starting = time.Time{}, false
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// New loads the enrolled nodes from st; each gets RestartGrace to
// reconnect before its silence counts.
func New(ctx context.Context, st store.Store, cfg Config) (*Registry, error) {
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, store: st,
		nodes: map[string]*node{}, writes: map[string]*api.Facts{}, wrote: make(chan struct{}, 1), judging: !cfg.Replica}
	if r.clock == nil {
		r.clock = clockwork.NewRealClock()
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	now := r.clock.Now()
	for _, n := range nodes {
		r.nodes[n.ID] = &node{name: n.Name, state: n.State, lastSeen: n.LastSeen, grace: now.Add(RestartGrace), flushed: n.LastSeen, hostErr: n.Error}
	}
	return r, nil
}

// Run checks liveness, writes node changes and flushes heartbeat times
// until ctx ends. The last flush, after the agent streams ended, is the
// caller's (Flush).
func (r *Registry) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.writeNodes(ctx) })
	defer wg.Wait()
	check := r.clock.NewTicker(max(r.cfg.HeartbeatInterval/4, 50*time.Millisecond))
	defer check.Stop()
	flush := r.clock.NewTicker(LastSeenFlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.Chan():
			r.mu.Lock()
			judging := r.judging
			r.mu.Unlock()
			if judging {
				r.Check()
			}
		case <-flush.Chan():
			r.Flush(ctx)
		}
	}
}

// Check marks ready nodes whose heartbeats stopped unreachable.
func (r *Registry) Check() {
	deadline := r.window()
	now := r.clock.Now()
	var lost []string
	r.mu.Lock()
	for id, n := range r.nodes {
		if n.state == api.NodeReady && n.silence(r.knownAt(n, now)) > deadline {
			n.state = api.NodeUnreachable
			r.note(id, nil)
			lost = append(lost, id)
		}
	}
	r.mu.Unlock()
	for _, id := range lost {
		r.log.Warn("node unreachable", "node_id", id, "missed_heartbeats", r.cfg.MissedHeartbeats)
		r.changed(id)
	}
}

// knownAt is the time up to which the registry knows whether node n was
// heard from: now, but for a node with no stream here on a leader of
// several replicas, when it last read the streams the others hold. A
// leader too loaded to read them (a 40,000-agent fan-out on two cores
// took 26,000 nodes held elsewhere for lost) does not count its own delay
// as the nodes' silence; a zero time, before its first read, counts none.
// Callers hold r.mu.
func (r *Registry) knownAt(n *node, now time.Time) time.Time {
	if r.cfg.Replica && n.streams == 0 {
		return r.presence
	}
	return now
}

// window is the silence that makes a node unreachable.
func (r *Registry) window() time.Duration {
	return time.Duration(r.cfg.MissedHeartbeats) * r.cfg.HeartbeatInterval
}

// Follow ends the judging a replica's Resume started: its lease ended.
func (r *Registry) Follow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.judging = false
}

func (r *Registry) changed(id string) {
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(id)
	}
}

// note queues node id's state and host error, as memory holds them, and
// its facts if given, for writeNodes. Callers hold r.mu.
func (r *Registry) note(id string, facts *api.Facts) {
	if old, ok := r.writes[id]; ok && facts == nil {
		facts = old
	}
	r.writes[id] = facts
	select {
	case r.wrote <- struct{}{}:
	default:
	}
}

// writeNodes writes queued node changes until ctx ends. The store's copy
// of a node's state is for the API and for the next server start; the
// controller itself goes by memory.
func (r *Registry) writeNodes(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wrote:
		}
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(nodeWriteWindow):
		}
		r.mu.Lock()
		ss := make([]store.NodeStatus, 0, len(r.writes))
		for id, facts := range r.writes {
			n := r.nodes[id]
			if n == nil {
				delete(r.writes, id)
				continue
			}
			if n.state == api.NodeUnreachable && !r.judging {
				// Judged while this replica led, and not written before
				// its lease ended: the next leader judges for itself, and
				// a late write would mark a node it hears unreachable. New
				// facts wait for the node's next change here.
				continue
			}
			ss = append(ss, store.NodeStatus{ID: id, State: n.state, Error: n.hostErr, LastSeen: n.lastSeen, Facts: facts})
			delete(r.writes, id)
		}
		r.mu.Unlock()
		if err := r.store.UpdateNodeStatuses(ctx, ss); err != nil && ctx.Err() == nil {
			r.log.Error("recording node states", "count", len(ss), "err", err)
			// Try again: memory still holds the latest of each.
			r.mu.Lock()
			for _, st := range ss {
				if _, queued := r.writes[st.ID]; !queued {
					r.writes[st.ID] = st.Facts
				}
			}
			r.mu.Unlock()
			r.clock.AfterFunc(time.Second, func() {
				select {
				case r.wrote <- struct{}{}:
				default:
				}
			})
		}
	}
}

// Flush writes the heartbeat times that changed since the last flush, and
// the usage of the nodes connected here.
func (r *Registry) Flush(ctx context.Context) {
	seen := map[string]store.Seen{}
	r.mu.Lock()
	for id, n := range r.nodes {
		if n.lastSeen.After(n.flushed) {
			x := store.Seen{At: n.lastSeen}
			// The usage of the nodes connected here, for the API of every
			// replica: the leader hears only when a node is emptied.
			if n.streams > 0 && n.reported {
				u := n.usage
				x.Usage = &u
			}
			seen[id] = x
		}
	}
	r.mu.Unlock()
	if err := r.store.SetSeen(ctx, seen); err != nil {
		r.log.Error("flushing last seen times", "err", err)
		return
	}
	r.mu.Lock()
	for id, x := range seen {
		if n := r.nodes[id]; n != nil {
			n.flushed = x.At
		}
	}
	r.mu.Unlock()
}

// Enrolled registers a newly enrolled node; it has StartupGrace and a
// liveness window to connect.
func (r *Registry) Enrolled(n api.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	r.nodes[n.ID] = &node{name: n.Name, state: n.State, lastSeen: now, grace: now.Add(StartupGrace), starting: true}
}

// Known reports whether the registry knows node id: every node this
// server enrolled or loaded does.
func (r *Registry) Known(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.nodes[id]
	return ok
}

// Revoked records that node id was revoked: its instances are lost.
func (r *Registry) Revoked(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[id]; n != nil {
		n.state = api.NodeRevoked
	}
}

// Removed forgets node id, which the store no longer has.
func (r *Registry) Removed(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.nodes, id)
}

// Connected records that node id opened a stream, with facts: it is ready,
// unless it was revoked meanwhile.
func (r *Registry) Connected(id string, facts api.Facts) {
	r.mu.Lock()
	n := r.nodes[id]
	if n == nil {
		n = &node{state: api.NodeUnreachable}
		r.nodes[id] = n
	}
	n.heard(r.clock.Now())
	n.streams++
	wasReady := n.state == api.NodeReady
	if n.state != api.NodeRevoked { // a stream that raced its node's revocation
		n.state = api.NodeReady
	}
	r.note(id, &facts)
	r.mu.Unlock()
	if !wasReady {
		r.log.Info("node ready", "node_id", id)
		r.changed(id)
	}
}

// Disconnected records that one of node id's streams on this server ended.
func (r *Registry) Disconnected(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[id]; n != nil && n.streams > 0 {
		n.streams--
	}
}

// Present records that the leader read, at at, that live replicas hold
// the streams of the nodes ids: each is live as if it had sent a
// heartbeat here then, and its usage and host error stay as they were.
// Until the next read, the silence of a node with no stream here counts
// only up to at (knownAt).
func (r *Registry) Present(ids []string, at time.Time) {
	var revived []string
	r.mu.Lock()
	r.presence = at
	for _, id := range ids {
		n := r.nodes[id]
		if n == nil || n.state == api.NodeRevoked {
			continue
		}
		if at.After(n.lastSeen) {
			n.heard(at)
		}
		if n.state != api.NodeReady {
			n.state = api.NodeReady
			r.note(id, nil)
			revived = append(revived, id)
		}
	}
	r.mu.Unlock()
	for _, id := range revived {
		r.log.Info("node ready", "node_id", id)
		r.changed(id)
	}
}

// Resume reads the nodes again from the store, for a replica that has
// become the leader: another wrote their states meanwhile. Like a
// restarted server, it gives each node RestartGrace before its silence
// counts, so that the agents of a replica that died with the old leader
// have the time to reach another. From then on it judges liveness, until
// Follow.
func (r *Registry) Resume(ctx context.Context) error {
	nodes, err := r.store.ListNodes(ctx)
	if err != nil {
		return err
	}
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	known := make(map[string]bool, len(nodes))
	for _, sn := range nodes {
		known[sn.ID] = true
		n := r.nodes[sn.ID]
		if n == nil {
			n = &node{}
			r.nodes[sn.ID] = n
		}
		n.name, n.state, n.hostErr = sn.Name, sn.State, sn.Error
		n.lastSeen, n.flushed = later(n.lastSeen, sn.LastSeen), sn.LastSeen
		n.grace = now.Add(RestartGrace)
	}
	for id := range r.nodes {
		if !known[id] {
			delete(r.nodes, id)
		}
	}
	r.presence = time.Time{} // what an earlier term read is stale
	r.judging = true
	return nil
}

// Resync makes the store's node states the leader's again: stored holds
// the nodes as the controller just read them. A write of a former
// leader's judgement that reached the store after this one's Resume read
// the nodes (it was on its way when the lease passed) is undone at the
// next read, within a minute; and so is any other difference. Only a
// server that judges liveness does this.
func (r *Registry) Resync(stored map[string]api.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.judging {
		return
	}
	judged := func(s api.NodeState) bool { return s == api.NodeReady || s == api.NodeUnreachable }
	differ := 0
	for id, sn := range stored {
		if n := r.nodes[id]; n != nil && n.state != sn.State && judged(n.state) && judged(sn.State) {
			r.note(id, nil)
			differ++
		}
	}
	if differ > 0 {
		r.log.Info("node states in the store differed from the leader's; rewriting them", "nodes", differ)
	}
}

// Silence is how long node id has not been heard from here, 0 if the
// registry does not know it or is handling one of its messages (Busy).
func (r *Registry) Silence(id string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[id]; n != nil && n.busy == 0 {
		return r.clock.Since(n.lastSeen)
	}
	return 0
}

// Busy records that this server is handling what node id's agent sent, in
// a way that may wait (setting up its stream, or a status for a controller
// behind with its writes): the agent's later messages wait behind it, so
// its silence does not count until the returned func is called, which
// counts it as heard from then. Calling it again does nothing.
func (r *Registry) Busy(id string) (done func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[id]
	if n == nil {
		return func() {}
	}
	n.busy++
	ended := false
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !ended {
			ended = true
			n.busy--
			n.heard(r.clock.Now())
		}
	}
}

// LoadNew adds the nodes of the store the registry does not know, and
// returns them: on a leader of several replicas, those enrolled through
// another. Each counts as last heard of when it was enrolled or last seen,
// with StartupGrace from its enrollment.
func (r *Registry) LoadNew(ctx context.Context) ([]api.Node, error) {
	nodes, err := r.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var added []api.Node
	for _, sn := range nodes {
		if r.nodes[sn.ID] == nil {
			r.nodes[sn.ID] = &node{name: sn.Name, state: sn.State, lastSeen: later(sn.LastSeen, sn.CreatedAt), flushed: sn.LastSeen, hostErr: sn.Error,
				grace: sn.CreatedAt.Add(StartupGrace), starting: true}
			added = append(added, sn)
		}
	}
	return added, nil
}

// Heartbeat is what an agent's heartbeat tells of its node.
type Heartbeat struct {
	// Usage is the node's usage; nil leaves the last one.
	Usage *api.Usage
	// Error is the agent's host problem, or "".
	Error string
	// Facts are sent only when they changed; nil otherwise.
	Facts *api.Facts
}

// Heartbeat records a node's liveness and usage in memory; only a change of
// state, facts or error reaches the store.
func (r *Registry) Heartbeat(id string, hb Heartbeat) {
	r.mu.Lock()
	n := r.nodes[id]
	if n == nil || n.state == api.NodeRevoked {
		r.mu.Unlock()
		return
	}
	n.lastSeen = r.clock.Now()
	emptied := false
	if hb.Usage != nil {
		emptied = hb.Usage.Containers == 0 && (n.usage.Containers > 0 || !n.reported)
		n.usage, n.reported = *hb.Usage, true
	}
	revived := n.state != api.NodeReady
	errChanged := n.hostErr != hb.Error
	n.state, n.hostErr = api.NodeReady, hb.Error
	// The agent sends facts only when they changed; with the error kept in
	// memory, an ordinary heartbeat touches the store neither to read nor
	// to write.
	if revived || errChanged || hb.Facts != nil {
		r.note(id, hb.Facts)
	}
	r.mu.Unlock()
	if revived {
		r.log.Info("node ready", "node_id", id)
		r.changed(id)
	}
	if emptied && r.cfg.OnEmptied != nil {
		r.cfg.OnEmptied(id)
	}
}

// Empty reports whether node id runs no container, as far as the server
// can know: a ready node once its heartbeat says so, a node that is not
// ready (nothing it runs can be seen or changed) at once.
func (r *Registry) Empty(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[id]
	return n == nil || n.state != api.NodeReady || n.reported && n.usage.Containers == 0
}

// Live fills in what only memory knows of a node: its latest heartbeat,
// usage and state.
func (r *Registry) Live(n *api.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A replica that does not lead knows only the nodes connected to it
	// and heard from; of the others the store has what the leader decided.
	if ln := r.nodes[n.ID]; ln != nil && (r.judging || ln.streams > 0 && ln.silence(r.clock.Now()) <= r.window()) {
		if ln.lastSeen.After(n.LastSeen) {
			n.LastSeen = ln.lastSeen
		}
		if ln.streams > 0 && ln.reported {
			n.Usage = ln.usage
		}
		n.State = ln.state
	}
}

// Name is node id's name, or "" if the registry does not know it.
func (r *Registry) Name(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[id]; n != nil {
		return n.name
	}
	return ""
}

// Names fills in the node names of instances.
func (r *Registry) Names(is []api.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range is {
		if n := r.nodes[is[i].NodeID]; n != nil {
			is[i].NodeName = n.name
		}
	}
}

// Ready returns the IDs of the nodes that are ready now.
func (r *Registry) Ready() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ready := make(map[string]bool, len(r.nodes))
	for id, n := range r.nodes {
		if n.state == api.NodeReady {
			ready[id] = true
		}
	}
	return ready
}

// Status is what liveness knows of a node for placement.
type Status struct {
	State api.NodeState
	// Down is how long a node that is not ready has been unreachable, as
	// liveness counts: its silence past the missed heartbeats that made it
	// so. --reschedule-after counts from there, as its users read it.
	Down time.Duration
}

// Track returns the status of each of nodes, as the store lists them.
// A node the registry did not know (enrolled by an earlier server and
// loaded by a reload) is registered with its stored state, as last seen
// now; a node's name is taken from the store's.
func (r *Registry) Track(nodes map[string]api.Node) map[string]Status {
	now := r.clock.Now()
	window := time.Duration(r.cfg.MissedHeartbeats) * r.cfg.HeartbeatInterval
	out := make(map[string]Status, len(nodes))
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, an := range nodes {
		n := r.nodes[id]
		if n == nil {
			n = &node{state: an.State, lastSeen: now}
			r.nodes[id] = n
		}
		n.name = an.Name
		st := Status{State: n.state}
		if n.state != api.NodeReady {
			st.Down = max(n.silence(r.knownAt(n, now))-window, 0)
		}
		out[id] = st
	}
	return out
}
