package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/proto"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/bus"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/leader"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/replica"
	"github.com/dockfleet/dockfleet/internal/restapi"
	"github.com/dockfleet/dockfleet/internal/store"
)

// A server on PostgreSQL is one replica of a cluster: any number share the
// store, every one serves the API and agents, and one, the leader, runs
// the controller and decides which nodes are live. The replicas talk only
// through the store, and through short notices on its bus:
//
//   - work the API or an agent asks of the controller on a replica that
//     does not lead is forwarded to the leader (needTopic);
//   - instance statuses and pull answers agents send such a replica are
//     queued in the store for the leader (store.AppendReports, reportsTopic);
//   - the leader's desired states go through the store to the replica that
//     holds each node's stream (package replica);
//   - a node revoked, removed or re-enrolled through one replica is
//     refused by every other's gate (gateTopic);
//   - each replica records which nodes' streams it holds, and renews its
//     own record every second; the leader counts a node held by a live
//     replica as heard from (liveness.Registry.Seen).
//
// A notice lost is caught by the resync of whatever it was about.
const (
	needTopic    bus.Topic = "dockfleet_need"
	reportsTopic bus.Topic = "dockfleet_reports"
	eventsTopic  bus.Topic = "dockfleet_events"
	// gateTopic: a node was revoked, removed or re-enrolled; every
	// replica's gate reads the store again (agentsvc.Gate.Sync).
	gateTopic bus.Topic = "dockfleet_gate"
	// sessionsTopic: a replica recorded streams opened; the leader reads
	// which replica holds which node at once, not at its next tick, so an
	// agent that moved is not silent to it meanwhile.
	sessionsTopic bus.Topic = "dockfleet_sessions"
)

// Timing of the replicas' bookkeeping.
const (
	// maxPresenceInterval is how often, at most, a replica renews its
	// record and writes the streams opened and closed since, and the
	// leader reads which replica holds which node: every heartbeat
	// interval, and at least every second.
	maxPresenceInterval = time.Second
	// reportsInterval is how often a replica writes the agents' reports
	// queued for the leader, and forwards work to it.
	reportsInterval = 50 * time.Millisecond
	reportsBatch    = 1000
)

// cluster makes this server one replica of several.
type cluster struct {
	id      string
	st      store.Store
	bus     *bus.Postgres
	elector *leader.Elector
	feed    *replica.Feed
	clock   clockwork.Clock
	log     *slog.Logger
	fleet   *fleet
	events  *restapi.EventBell
	addrs   store.Replica
	// every is how often the replica renews its record, and the leader
	// reads the streams the replicas hold; silence is how long a replica
	// may miss renewing it before the leader stops counting its nodes as
	// heard from (they then have the missed-heartbeat window to reach
	// another replica).
	every, silence time.Duration
	// window is the silence that makes a node unreachable.
	window time.Duration

	needs   <-chan bus.Message
	reports <-chan bus.Message
	evs     <-chan bus.Message
	gates   <-chan bus.Message
	gate    *agentsvc.Gate
	opened  <-chan bus.Message
	// kick asks the presence loop to write the sessions now.
	kick chan struct{}

	mu       sync.Mutex
	sessions []store.Session // opened and closed since the last write
	queued   []store.Report  // agents' reports for the leader
	need     controller.Work // work to forward to the leader, if forward
	forward  bool
	// local holds the nodes whose streams are open here: true while the
	// store says so, false while the node is silent past the window.
	local map[string]bool
}

// newReplicaID names this process among the replicas: its host, and a
// random part, so that a restarted replica is a new one.
func newReplicaID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%s", host, hex.EncodeToString(b))
}

func newCluster(ctx context.Context, st *store.Postgres, cfg Config, clock clockwork.Clock, events *restapi.EventBell) (*cluster, error) {
	b, err := bus.NewPostgres(ctx, st.URL(), cfg.Logger, clock)
	if err != nil {
		return nil, err
	}
	id := cfg.ReplicaID
	if id == "" {
		id = newReplicaID()
	}
	every := min(cfg.HeartbeatInterval, maxPresenceInterval)
	c := &cluster{id: id, st: st, bus: b, clock: clock, log: cfg.Logger.With("replica", id), events: events,
		every: every, silence: 3 * every, window: time.Duration(cfg.MissedHeartbeats) * cfg.HeartbeatInterval,
		local: map[string]bool{},
		needs: b.Subscribe(needTopic), reports: b.Subscribe(reportsTopic), evs: b.Subscribe(eventsTopic),
		gates: b.Subscribe(gateTopic), opened: b.Subscribe(sessionsTopic), kick: make(chan struct{}, 1)}
	c.elector = leader.New(st, leader.Config{Name: "controller", Holder: id, Clock: clock, Logger: cfg.Logger})
	events.Relay = c.relayEvents
	return c, nil
}

// bind gives the cluster the fleet and gate it serves, once they exist.
func (c *cluster) bind(f *fleet, g *agentsvc.Gate, agentAddr, apiAddr string) {
	c.fleet, c.gate = f, g
	c.feed = replica.NewFeed(c.st, c.bus, f.out, c.clock, c.log)
	c.addrs = store.Replica{ID: c.id, AgentAddr: agentAddr, APIAddr: apiAddr, StartedAt: c.clock.Now()}
}

// Leading reports whether this replica leads.
func (c *cluster) Leading() bool { return c.elector.Epoch() != 0 }

// Forward hands the leader work asked of this replica's controller; the
// work of reportsInterval goes in one notice.
func (c *cluster) Forward(w controller.Work) {
	c.mu.Lock()
	c.need |= w
	c.forward = true
	c.mu.Unlock()
}

// Report queues what an agent connected here told, for the leader.
func (c *cluster) Report(nodeID string, m *agentproto.AgentMessage) {
	b, err := proto.Marshal(m)
	if err != nil {
		c.log.Error("encoding an agent's report", "node_id", nodeID, "err", err)
		return
	}
	c.mu.Lock()
	c.queued = append(c.queued, store.Report{NodeID: nodeID, Body: b})
	c.mu.Unlock()
}

// session records that node id's stream opened here or ended, and gives
// a new stream its node's desired state.
func (c *cluster) session(ctx context.Context, nodeID string, open bool) {
	c.mu.Lock()
	c.sessions = append(c.sessions, store.Session{NodeID: nodeID, Replica: c.id, Since: c.clock.Now(), Closed: !open})
	if open {
		c.local[nodeID] = true
	} else {
		delete(c.local, nodeID)
	}
	c.mu.Unlock()
	if open {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	if open {
		if err := c.feed.NodeConnected(ctx, nodeID); err != nil {
			c.log.Warn("reading a connecting node's desired state; it comes with the next resync", "node_id", nodeID, "err", err)
		}
	}
}

// gateChanged tells every replica's gate that a node was revoked,
// removed or re-enrolled here.
func (c *cluster) gateChanged() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.bus.Publish(ctx, gateTopic, ""); err != nil {
		// The others refuse the node when their bus is back (a resync).
		c.log.Warn("telling the replicas of a revoked or re-enrolled node", "err", err)
	}
}

// relayEvents wakes the other replicas' event followers (the local
// bell's Relay).
func (c *cluster) relayEvents() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.bus.Publish(ctx, eventsTopic, ""); err != nil {
		c.log.Debug("telling the replicas of new events", "err", err)
	}
}

// run runs the replica's part until ctx ends, and the leader's while it
// leads.
func (c *cluster) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.bus.Run(ctx) })
	wg.Go(func() { c.feed.Run(ctx) })
	// Every replica writes the facts, host errors and heartbeat times of
	// the nodes connected to it; only the leader judges their liveness.
	wg.Go(func() { c.fleet.live.Run(ctx) })
	wg.Go(func() { c.renewRecord(ctx) })
	wg.Go(func() { c.presence(ctx) })
	wg.Go(func() { c.sendReports(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.evs:
				c.events.Wake()
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.gates:
				newly, err := c.gate.Sync(ctx, c.st)
				if err != nil {
					if ctx.Err() == nil {
						c.log.Warn("reading revoked and re-enrolled nodes", "err", err)
					}
					continue
				}
				for _, id := range newly {
					c.fleet.live.Revoked(id)
				}
			}
		}
	})
	wg.Go(func() { c.elector.Run(ctx, c.lead) })
	wg.Wait()
	// A replica stopped on purpose says so: its nodes are not waited for.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := c.st.DeleteReplica(dctx, c.id); err != nil {
		c.log.Warn("removing this replica's record", "err", err)
	}
	c.bus.Close()
}

// renewRecord renews this replica's record every c.every: the leader
// counts the nodes of a replica late to renew as not heard from. It runs
// apart from presence, whose writes may wait for a busy table.
func (c *cluster) renewRecord(ctx context.Context) {
	t := c.clock.NewTicker(c.every)
	defer t.Stop()
	for {
		if err := c.st.ReplicaSeen(ctx, c.addrs); err != nil && ctx.Err() == nil {
			c.log.Warn("renewing this replica's record", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

// presence writes the streams opened and closed here, every c.every.
func (c *cluster) presence(ctx context.Context) {
	t := c.clock.NewTicker(c.every)
	defer t.Stop()
	for {
		c.mu.Lock()
		c.noteSilence()
		ss := c.sessions
		c.sessions = nil
		c.mu.Unlock()
		if err := c.st.UpdateSessions(ctx, ss); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("recording the streams this replica holds", "err", err)
			}
			c.mu.Lock()
			c.sessions = append(ss, c.sessions...)
			c.mu.Unlock()
		} else if opened(ss) {
			if err := c.bus.Publish(ctx, sessionsTopic, ""); err != nil && ctx.Err() == nil {
				c.log.Debug("telling the leader of streams opened", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-c.kick:
		}
	}
}

// opened reports whether ss records a stream opened.
func opened(ss []store.Session) bool {
	for _, x := range ss {
		if !x.Closed {
			return true
		}
	}
	return false
}

// noteSilence records as closed the streams of nodes silent here past the
// unreachable window, and as open again those heard from since: a node cut
// off from this replica may keep its TCP connection for a while, and the
// leader must not count it as heard from meanwhile. A reopened stream does
// not take the record from another replica's (store.Session.Reopened): what
// this one heard may be messages it handled late, after the agent left.
// Callers hold c.mu.
func (c *cluster) noteSilence() {
	now := c.clock.Now()
	for id, open := range c.local {
		silent := c.fleet.live.Silence(id) > c.window
		if silent == open {
			c.local[id] = !silent
			c.sessions = append(c.sessions, store.Session{NodeID: id, Replica: c.id, Since: now, Closed: silent, Reopened: !silent})
		}
	}
}

// sendReports forwards work to the leader and writes the queued agents'
// reports for it, every reportsInterval.
func (c *cluster) sendReports(ctx context.Context) {
	t := c.clock.NewTicker(reportsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		c.mu.Lock()
		rs, w, forward := c.queued, c.need, c.forward
		c.queued, c.need, c.forward = nil, 0, false
		c.mu.Unlock()
		if forward {
			if err := c.bus.Publish(ctx, needTopic, strconv.FormatUint(uint64(w), 10)); err != nil && ctx.Err() == nil {
				// The leader's reload (every minute) does it later.
				c.log.Warn("forwarding work to the leader", "err", err)
			}
		}
		if len(rs) == 0 {
			continue
		}
		if err := c.st.AppendReports(ctx, rs); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("queueing agents' reports for the leader; retrying", "err", err, "reports", len(rs))
			}
			c.mu.Lock()
			c.queued = append(rs, c.queued...)
			c.mu.Unlock()
			continue
		}
		if err := c.bus.Publish(ctx, reportsTopic, ""); err != nil && ctx.Err() == nil {
			c.log.Debug("telling the leader of agents' reports", "err", err)
		}
	}
}

// lead is the leader's work for one term of its lease: the controller,
// node liveness, the agents' reports, and which replica holds which node.
func (c *cluster) lead(ctx context.Context, epoch int64) {
	ctx = store.WithFence(ctx, store.Fence{Name: "controller", Holder: c.id, Epoch: epoch})
	f := c.fleet
	if err := f.live.Resume(ctx); err != nil {
		c.leadFailed(ctx, "reading the nodes to lead", err)
		return
	}
	// Liveness judges from Resume until the lease ends, not until the
	// leader's work has wound down: a former leader hears no more of the
	// nodes held elsewhere.
	stop := context.AfterFunc(ctx, f.live.Follow)
	defer func() {
		if stop() {
			f.live.Follow()
		}
	}()
	out, err := replica.NewOutbox(ctx, c.st, c.bus, c.log)
	if err != nil {
		c.leadFailed(ctx, "reading the desired states to lead", err)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { f.ctl.RunLeader(ctx, out) })
	wg.Go(func() { c.takeReports(ctx) })
	wg.Go(func() { c.watchPresence(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-c.needs:
				// One pass serves every notice waiting: agents enrolling by
				// the thousand through other replicas send them by the
				// dozen a second, and a pass per notice falls behind.
				w := neededWork(m)
				for more := true; more; {
					select {
					case m := <-c.needs:
						w |= neededWork(m)
					default:
						more = false
					}
				}
				c.leadNeed(ctx, w)
				// What comes meanwhile waits for the next pass.
				if !c.sleep(ctx, needInterval) {
					return
				}
			}
		}
	})
	wg.Wait()
}

// leadFailed logs why a term ended before its work began: an ERROR if
// the store failed it, not if the lease ended first (a leader too loaded
// to renew it in time), which the elector logs.
func (c *cluster) leadFailed(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		c.log.Info(what+": the lease ended first", "err", err)
		return
	}
	c.log.Error(what+"; giving the lease up", "err", err)
}

// needInterval is the least time between two passes for work forwarded
// by the other replicas.
const needInterval = 100 * time.Millisecond

// neededWork is the work a notice on needTopic forwards; a Resync, or a
// notice that does not read, asks for everything.
func neededWork(m bus.Message) controller.Work {
	if !m.Resync {
		if n, err := strconv.ParseUint(m.Payload, 10, 8); err == nil {
			return controller.Work(n)
		}
	}
	return controller.ReloadAll | controller.NodesJoined
}

// leadNeed does on the leader work forwarded by other replicas.
func (c *cluster) leadNeed(ctx context.Context, w controller.Work) {
	f := c.fleet
	if w&(controller.NodesJoined|controller.ReloadNodes) != 0 {
		// Nodes enrolled through another replica: liveness follows them
		// from now on, and the controller's view takes them in.
		added, err := f.live.LoadNew(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("reading new nodes", "err", err)
			w |= controller.ReloadNodes // the next reload catches them
		}
		for _, n := range added {
			f.ctl.Joined(n)
		}
	}
	f.ctl.Need(w &^ controller.NodesJoined)
}

// takeReports hands the agents' reports other replicas queued to the
// controller and liveness, oldest first, and deletes them.
func (c *cluster) takeReports(ctx context.Context) {
	t := c.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		for {
			rs, err := c.st.Reports(ctx, reportsBatch)
			if err != nil {
				if ctx.Err() == nil {
					c.log.Warn("reading agents' reports", "err", err)
				}
				break
			}
			seqs := make([]int64, len(rs))
			for i, r := range rs {
				seqs[i] = r.Seq
				c.handleReport(ctx, r)
			}
			if err := c.st.DeleteReports(ctx, seqs); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("deleting handled agents' reports", "err", err)
				}
				break
			}
			if len(rs) < reportsBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-c.reports:
		case <-t.Chan():
		}
	}
}

func (c *cluster) handleReport(ctx context.Context, r store.Report) {
	var m agentproto.AgentMessage
	if err := proto.Unmarshal(r.Body, &m); err != nil {
		c.log.Error("an agent's report in the store does not decode", "node_id", r.NodeID, "err", err)
		return
	}
	switch m := m.Msg.(type) {
	case *agentproto.AgentMessage_Status:
		c.fleet.ctl.Status(ctx, r.NodeID, m.Status)
	case *agentproto.AgentMessage_Pulled:
		c.fleet.ctl.Pulled(r.NodeID, m.Pulled)
	case *agentproto.AgentMessage_Heartbeat:
		// Only a change the leader needs: a node that runs no container
		// any more (a drain waits for it).
		if u := m.Heartbeat.GetUsage(); u != nil {
			c.fleet.live.Heartbeat(r.NodeID, liveness.Heartbeat{Usage: &api.Usage{Containers: int(u.Containers)}, Error: m.Heartbeat.Error})
		}
	}
}

// watchPresence counts the nodes whose streams live replicas hold as
// heard from when it began to read them, every c.every.
func (c *cluster) watchPresence(ctx context.Context) {
	t := c.clock.NewTicker(c.every)
	defer t.Stop()
	for {
		at := c.clock.Now()
		rs, err := c.st.ListReplicas(ctx)
		var ss []store.Session
		if err == nil {
			ss, err = c.st.ListSessions(ctx)
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("reading which replica holds which node", "err", err)
			}
		} else {
			live := map[string]bool{}
			for _, r := range rs {
				if r.Silence < c.silence && r.ID != c.id {
					live[r.ID] = true
				}
			}
			var held []string
			for _, s := range ss {
				if live[s.Replica] {
					held = append(held, s.NodeID)
				}
			}
			c.fleet.live.Present(held, at)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-c.opened:
			// Agents connecting by the thousand send notices by the
			// hundred: a read serves those of a fifth of a tick.
			if !c.sleep(ctx, c.every/5) {
				return
			}
		}
	}
}

// sleep waits d on the cluster's clock, and says false if ctx ended first.
func (c *cluster) sleep(ctx context.Context, d time.Duration) bool {
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}
