// Package replica carries desired states from the leader replica to the
// replicas that hold the agents' streams, through the store they share.
//
// The leader's controller hands each node's new desired state to an
// Outbox, which writes a pass's states in one transaction under one new
// sequence number (store.PutDesiredStates, fenced by the leader's lease)
// and publishes the number on the bus. Every replica runs a Feed: on each
// notice, and every ResyncInterval in case one was lost, it reads which
// nodes' states changed since the last number it saw, fetches those of
// the nodes whose streams it holds, and delivers them to its fanout,
// numbered as the leader numbered them. A node that connects gets its
// state from the store at once.
//
// The store is the truth and the bus only says when to look, so a lost
// notice delays a delivery by ResyncInterval at most, and a replica that
// restarts, or a leader that changes, loses nothing.
package replica

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/proto"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/bus"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/store"
)

// DesiredTopic is the bus topic of new desired states; its payload is the
// sequence number written.
const DesiredTopic bus.Topic = "dockfleet_desired"

// ResyncInterval is how often a Feed reads the store with no notice.
const ResyncInterval = 5 * time.Second

// Store is what the replicas' desired-state path needs of the store.
type Store interface {
	PutDesiredStates(ctx context.Context, ds []store.DesiredState) (int64, error)
	DesiredSince(ctx context.Context, after int64) ([]store.DesiredState, int64, error)
	DesiredStates(ctx context.Context, nodeIDs []string) ([]store.DesiredState, error)
}

// Outbox takes the leader's desired states and writes them to the store.
// Its methods are those the controller calls on a fanout, plus Flush at
// the end of a pass. Safe for concurrent use.
type Outbox struct {
	st  Store
	bus bus.Bus
	log *slog.Logger

	mu      sync.Mutex
	keys    map[string]string // node → key of the last state written or pending
	pulls   map[string]bool   // nodes whose last state asked for pulls
	pending []store.DesiredState
}

// NewOutbox returns an outbox that knows the keys of the states the store
// holds, so that a new leader rewrites only what changed.
func NewOutbox(ctx context.Context, st Store, b bus.Bus, log *slog.Logger) (*Outbox, error) {
	ds, _, err := st.DesiredSince(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("reading the desired states: %w", err)
	}
	o := &Outbox{st: st, bus: b, log: log, keys: make(map[string]string, len(ds)), pulls: map[string]bool{}}
	for _, d := range ds {
		o.keys[d.NodeID] = d.Key
	}
	return o, nil
}

// Stale lists the nodes of ids whose desired state every pass must
// compute: those with none, and those last asked to pull images.
func (o *Outbox) Stale(ids iter.Seq[string]) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var stale []string
	for id := range ids {
		if _, ok := o.keys[id]; !ok || o.pulls[id] {
			stale = append(stale, id)
		}
	}
	return stale
}

// Unchanged reports whether node id's last state was of key.
func (o *Outbox) Unchanged(id, key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k, ok := o.keys[id]
	return ok && k == key
}

// Send queues d as node id's desired state of key, for Flush.
func (o *Outbox) Send(id, key string, d *agentproto.DesiredState) {
	b, err := proto.Marshal(d)
	if err != nil {
		// Our own message of plain fields: it always marshals.
		o.log.Error("encoding a desired state", "node_id", id, "err", err)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.keys[id], o.pulls[id] = key, len(d.PullImages) > 0
	o.pending = append(o.pending, store.DesiredState{NodeID: id, Key: key, State: b})
}

// Flush writes the queued states in one transaction (ctx carries the
// leader's fence) and tells the replicas. On failure it forgets their keys,
// so that the next pass computes them again.
func (o *Outbox) Flush(ctx context.Context) error {
	o.mu.Lock()
	ds := o.pending
	o.pending = nil
	o.mu.Unlock()
	if len(ds) == 0 {
		return nil
	}
	seq, err := o.st.PutDesiredStates(ctx, ds)
	if err != nil {
		o.mu.Lock()
		for _, d := range ds {
			delete(o.keys, d.NodeID)
		}
		o.mu.Unlock()
		return fmt.Errorf("writing %d desired states: %w", len(ds), err)
	}
	if err := o.bus.Publish(ctx, DesiredTopic, strconv.FormatInt(seq, 10)); err != nil {
		// The replicas' resync finds the states all the same.
		o.log.Warn("telling the replicas of new desired states", "err", err)
	}
	return nil
}

// Feed delivers the leader's desired states to the streams this replica
// holds.
type Feed struct {
	st    Store
	bus   bus.Bus
	out   *fanout.Fanout
	clock clockwork.Clock
	log   *slog.Logger
	msgs  <-chan bus.Message

	mu   sync.Mutex // serialises syncs; guards last
	last int64      // the greatest sequence number seen
}

// NewFeed returns a feed into out. It subscribes to the bus at once, so
// no notice published after NewFeed is missed.
func NewFeed(st Store, b bus.Bus, out *fanout.Fanout, clock clockwork.Clock, log *slog.Logger) *Feed {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Feed{st: st, bus: b, out: out, clock: clock, log: log, msgs: b.Subscribe(DesiredTopic)}
}

// Run delivers new states on each notice and every ResyncInterval until
// ctx ends.
func (f *Feed) Run(ctx context.Context) {
	tick := f.clock.NewTicker(ResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.msgs:
		case <-tick.Chan():
		}
		if err := f.Sync(ctx); err != nil && ctx.Err() == nil {
			f.log.Warn("reading new desired states; retrying at the next notice or resync", "err", err)
		}
	}
}

// Sync delivers the states written since the last it saw, of the nodes
// whose streams this replica holds.
func (f *Feed) Sync(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed, last, err := f.st.DesiredSince(ctx, f.last)
	if err != nil {
		return err
	}
	var ids []string
	for _, d := range changed {
		if f.out.Connected(d.NodeID) {
			ids = append(ids, d.NodeID)
		}
	}
	if err := f.deliver(ctx, ids); err != nil {
		return err
	}
	f.last = last
	return nil
}

// NodeConnected delivers node id's state, which its new stream needs.
func (f *Feed) NodeConnected(ctx context.Context, id string) error {
	return f.deliver(ctx, []string{id})
}

func (f *Feed) deliver(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ds, err := f.st.DesiredStates(ctx, ids)
	if err != nil {
		return err
	}
	for _, d := range ds {
		var m agentproto.DesiredState
		if err := proto.Unmarshal(d.State, &m); err != nil {
			f.log.Error("a desired state in the store does not decode; the node keeps its last", "node_id", d.NodeID, "err", err)
			continue
		}
		m.Generation = uint64(d.Seq)
		f.out.Deliver(d.NodeID, d.Key, &m)
	}
	return nil
}
