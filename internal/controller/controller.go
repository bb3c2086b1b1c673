// Package controller is the server's control loop: it places instances on
// nodes, steps the active rollouts, pins image digests, records what agents
// report of their instances, drains nodes, and hands each node's desired
// state to package fanout.
//
// One goroutine (Run) owns the controller's view of the store. Everything
// else reaches it through methods that queue an input and trigger a pass:
// Need (the API changed something), Joined (a node enrolled), Status and
// Pulled (an agent reported). Node liveness is package liveness's; the
// controller reads it when it places and steps. Time comes from an
// injected clock, so a test moves time instead of sleeping.
package controller

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"iter"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/sparselog"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// minPassInterval spaces the passes that only agents asked for: status
// reports, connections and pre-pull answers. At 10,000 nodes a pass costs
// milliseconds, and a rollout's reports would otherwise start one every
// status batch; a pass for a change made through the API runs at once.
const minPassInterval = 100 * time.Millisecond

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

// logInterval is how often each kind of warning about what nodes send is
// logged at most: a hostile node can send many.
const logInterval = 10 * time.Second

// Config is what a Controller needs besides its store and its peers.
type Config struct {
	// RescheduleAfter is how long a replicated instance stays on an
	// unreachable node before it is placed elsewhere.
	RescheduleAfter time.Duration
	// PrePullParallelism caps how many nodes pull a rollout's image at
	// once in its pre-pull phase.
	PrePullParallelism int
	// ImagePolicy is the image policy of the deployments whose spec names none.
	ImagePolicy spec.ImagePolicy
	// Clock is the controller's time; nil is the real clock.
	Clock clockwork.Clock
	// Logger gets what the controller does; nil discards it.
	Logger *slog.Logger
	// OnEvents, if set, is called after the controller appended events,
	// to wake the API's followers.
	OnEvents func()
	// Cluster, if set, makes the controller one replica's of several that
	// share a store: it runs (RunLeader) only while its replica leads,
	// and its replica hands what it is asked meanwhile to the leader.
	Cluster Cluster
}

// Cluster is what a controller of one of several replicas needs of them.
type Cluster interface {
	// Leading reports whether this replica leads now.
	Leading() bool
	// Forward hands the leader work the API or a node asked for here.
	Forward(w Work)
	// Report hands the leader what an agent connected here reported: an
	// instance status or an image pull answer.
	Report(nodeID string, m *agentproto.AgentMessage)
}

// Outbox takes the desired states the controller makes: a fanout on a
// single server, the store for a leader of several replicas (which also
// has Flush, called at the end of each pass).
type Outbox interface {
	Stale(ids iter.Seq[string]) []string
	Unchanged(id, key string) bool
	Send(id, key string, d *agentproto.DesiredState)
}

// Controller places instances, steps rollouts and pushes desired states.
type Controller struct {
	cfg   Config
	clock clockwork.Clock
	log   *slog.Logger
	store store.Store
	live  *liveness.Registry
	out   Outbox // the run goroutine's, set before it starts
	wake  chan struct{}

	// view and pinChecked belong to the run goroutine.
	view *view
	// pinChecked remembers the instance reports whose digest pin has
	// looked at, so a report repeated at every state change costs nothing.
	pinChecked map[string]bool
	// digestLog warns of digests nodes report that cannot be pinned, and
	// of invalid pins in the store; a hostile node can send many.
	digestLog      *sparselog.Log
	unaskedPullLog *sparselog.Log
	oversizeLog    *sparselog.Log

	// statuses queues instance status reports; batchStatuses hands them
	// to the run goroutine in batches.
	statuses chan store.InstanceStatus
	batches  chan []store.InstanceStatus
	// runMu guards running and ended: what a run that ended (a leader
	// that lost its lease) did not write goes to the next leader
	// (handOver). It is never held while waiting.
	runMu   sync.Mutex
	running bool
	ended   chan struct{} // closed when the run ends

	// mu guards the inputs that methods called from other goroutines
	// leave for the run goroutine, and the timer.
	mu sync.Mutex
	// pending is the work the next pass must do besides stepping rollouts.
	pending Work
	// joined holds nodes enrolled since the last pass, for the view.
	joined []api.Node
	// timer and timerAt schedule the next time-driven pass (a rollout's
	// minimum healthy time or deadline); one timer serves every rollout.
	timer   clockwork.Timer
	timerAt time.Time
	// pulls holds the pre-pull requests of rollouts in pre-pull and their
	// answers: node → image → result (trackPulls).
	pulls map[string]map[string]pullResult
	// instEvents holds what agents did on their own to their instances
	// (restarted, recreated), for record to write as events.
	instEvents []instEvent
	// draining says that a node is draining and runs instances, or its
	// agent containers, still.
	draining bool

	seqs stateSeqs
}

// New returns a controller over st that reads liveness from live and
// hands desired states to out. Its first pass reads everything.
func New(st store.Store, live *liveness.Registry, out Outbox, cfg Config) *Controller {
	c := &Controller{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, store: st, live: live, out: out, wake: make(chan struct{}, 1),
		view: newView(), pinChecked: map[string]bool{},
		statuses: make(chan store.InstanceStatus, 4096), batches: make(chan []store.InstanceStatus),
		pending: ReloadAll, pulls: map[string]map[string]pullResult{}}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.digestLog = sparselog.New(c.log, logInterval)
	c.unaskedPullLog = sparselog.New(c.log, logInterval)
	c.oversizeLog = sparselog.New(c.log, logInterval)
	return c
}

// wakeAt asks for a pass at t at the latest.
func (c *Controller) wakeAt(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil && !c.timerAt.After(t) && c.timerAt.After(c.clock.Now()) {
		return // an earlier wake is already set
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timerAt = t
	c.timer = c.clock.AfterFunc(c.clock.Until(t), c.Trigger)
}

// Need asks the next pass to do w; it also triggers one.
func (c *Controller) Need(w Work) {
	if c.following() {
		c.cfg.Cluster.Forward(w)
		return
	}
	c.mu.Lock()
	c.pending |= w
	c.mu.Unlock()
	c.Trigger()
}

// Emptied tells the controller that a node's agent reports running no
// container: a drain that waited for it may end.
func (c *Controller) Emptied() {
	c.mu.Lock()
	draining := c.draining
	if draining {
		c.pending |= Place
	}
	c.mu.Unlock()
	if draining {
		c.Trigger()
	}
}

// Trigger asks the controller for a pass soon: it steps the active
// rollouts and pushes what changed. Calls coalesce.
func (c *Controller) Trigger() {
	if c.following() {
		c.cfg.Cluster.Forward(0)
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Joined adds a newly enrolled node to the view at the next pass, which
// places instances on it.
func (c *Controller) Joined(n api.Node) {
	if c.following() {
		c.cfg.Cluster.Forward(NodesJoined | Place)
		return
	}
	c.mu.Lock()
	c.joined = append(c.joined, n)
	c.pending |= Place
	c.mu.Unlock()
	c.Trigger()
}

// following reports whether another replica leads: what this one's
// controller is asked goes to it.
func (c *Controller) following() bool {
	return c.cfg.Cluster != nil && !c.cfg.Cluster.Leading()
}

// RunLeader runs the controller of a replica that has just become the
// leader, with out for its desired states, until ctx ends (its lease
// ended): it starts from a view read afresh, as the last leader left the
// store.
func (c *Controller) RunLeader(ctx context.Context, out Outbox) {
	c.out = out
	c.mu.Lock()
	c.pending |= ReloadAll
	c.mu.Unlock()
	c.Run(ctx)
}

// Run runs passes, and writes status reports, until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	ended := make(chan struct{})
	c.runMu.Lock()
	c.running, c.ended = true, ended
	c.runMu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { c.batchStatuses(ctx) })
	defer func() {
		wg.Wait()
		c.runMu.Lock()
		c.running = false
		c.runMu.Unlock()
		close(ended) // Status calls waiting to send hand over
		c.handOverQueued()
	}()
	resync := c.clock.NewTicker(resyncInterval)
	defer resync.Stop()
	reload := c.clock.NewTicker(reloadInterval)
	defer reload.Stop()
	c.Trigger()
	var last time.Time // the last pass
	defer func() {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			c.mu.Lock()
			changed := c.pending&(ReloadNodes|ReloadDeployments|ReloadInstances) != 0
			c.mu.Unlock()
			if next := last.Add(minPassInterval); !changed && c.clock.Now().Before(next) {
				c.wakeAt(next)
				continue
			}
			last = c.clock.Now()
			if err := c.schedule(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("placement failed; retrying", "err", err)
				// What failed may have left the view unlike the store.
				c.mu.Lock()
				c.pending |= ReloadAll
				c.mu.Unlock()
				c.clock.AfterFunc(time.Second, c.Trigger)
			}
		case batch := <-c.batches:
			c.record(ctx, batch)
		case <-resync.Chan():
			c.Need(Place)
		case <-reload.Chan():
			c.Need(ReloadAll)
		}
	}
}

// schedule is one pass of the controller: it brings the view up to date,
// places instances if something placement reads changed, steps the active
// rollouts, and pushes each node whose desired state changed.
func (c *Controller) schedule(ctx context.Context) error {
	c.mu.Lock()
	w, joined := c.pending, c.joined
	c.pending, c.joined = 0, nil
	c.mu.Unlock()
	v := c.view
	if err := v.reload(ctx, c.store, w, c.digestLog.Warn); err != nil {
		return err
	}
	if w&ReloadNodes != 0 {
		c.live.Resync(v.nodes)
	}
	for _, n := range joined {
		v.nodes[n.ID] = n
	}
	// dirty holds the nodes whose desired state may have changed; nil
	// means all of them.
	dirty := map[string]bool{}
	if w&(ReloadDeployments|ReloadInstances) != 0 {
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
	if w&Place != 0 {
		if err := c.place(ctx, mark); err != nil {
			return err
		}
	}
	pullReqs, err := c.progress(ctx, w&ReloadDeployments != 0, mark)
	if err != nil {
		return err
	}
	seq, salt, err := c.readStateSeq(ctx)
	if err != nil {
		return err
	}
	c.push(dirty, pullReqs, seq, salt)
	if f, ok := c.out.(interface{ Flush(context.Context) error }); ok {
		if err := f.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// notify wakes the API's event followers.
func (c *Controller) notify() {
	if c.cfg.OnEvents != nil {
		c.cfg.OnEvents()
	}
}

// NewID returns a random 16-hex-digit identifier for nodes, instances and
// rollouts.
func NewID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SpecHash identifies a container spec; agents replace a container whose
// label carries another hash. encoding/json sorts map keys, so equal specs
// hash equally.
func SpecHash(c spec.Container) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
