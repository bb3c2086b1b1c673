package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dockfleet/dockfleet/internal/api"
)

// stateSeqs is what the controller knows of the store's state sequence
// (store.StateSeqs) and of the agents ahead of it.
type stateSeqs struct {
	// sent is the sequence the last pass read to send, a lower bound of
	// the store's (it never decreases): an agent at or below it is not
	// ahead, and its heartbeat costs no store access.
	sent atomic.Uint64
	// salt changes the key of every desired state when the restored
	// state is accepted, so that every node is sent its state again.
	salt atomic.Uint64
	// nheld counts held, for the heartbeats' fast path.
	nheld atomic.Int32
	// warned is set once the store's hold was logged.
	warned atomic.Bool

	mu sync.Mutex // guards held; taken by agents ahead only
	// held maps the nodes whose agent reported a sequence above what the
	// store sends to that sequence.
	held map[string]uint64
}

// readStateSeq reads the sequence to send with the desired states of a
// pass, and the salt of their keys. It is read after the view the states
// are built from, so that it is at or above the sequence of every change
// they include. The salt is read first: AcceptRestore changes it after it
// raised the sequence, so a pass that keys its states with a new salt
// sends them with the raised sequence, and one that read the old salt
// leaves them to the pass AcceptRestore asks for.
func (c *Controller) readStateSeq(ctx context.Context) (seq, salt uint64, err error) {
	salt = c.seqs.salt.Load()
	q, err := c.store.StateSeq(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the state sequence: %w", err)
	}
	seq = q.Sent()
	raiseTo(&c.seqs.sent, seq)
	if q.Held != 0 && !c.seqs.warned.Swap(true) {
		c.log.Warn("the store is held (restored from a backup?): desired states carry its state sequence as it was until "+
			"'dockfleet store accept-restore'; nodes whose agents applied a newer state keep their containers and show held",
			"held_state_seq", q.Held, "state_seq", q.Seq, "agent_state_seq", q.Ahead)
	}
	return seq, salt, nil
}

func raiseTo(v *atomic.Uint64, to uint64) {
	for {
		old := v.Load()
		if to <= old || v.CompareAndSwap(old, to) {
			return
		}
	}
}

// HeldText is what a held node's error says.
func HeldText(agentSeq, storeSeq uint64) string {
	return fmt.Sprintf("held: the agent has applied state %d but this server's store is at %d (restored from an older backup?); "+
		"it keeps its containers. Run 'dockfleet store accept-restore' to make the restored state rule (it removes what the store does not know)",
		agentSeq, storeSeq)
}

// AgentStateSeq takes the state sequence node nodeID's agent reported
// (hello, heartbeat) and returns, when the agent is ahead of what the
// store sends (the store was restored from an older backup, and the agent
// holds), the text that says so on the node, else "". The first time a
// node is found ahead it records it in the store, which keeps sending
// the sequence it had then, logs a warning and appends an event.
func (c *Controller) AgentStateSeq(ctx context.Context, nodeID string, seq uint64) string {
	s := &c.seqs
	if seq <= s.sent.Load() {
		if s.nheld.Load() > 0 {
			s.mu.Lock()
			if _, ok := s.held[nodeID]; ok {
				delete(s.held, nodeID)
				s.nheld.Add(-1)
			}
			s.mu.Unlock()
		}
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.sent.Load() {
		return "" // another agent's call read the store meanwhile
	}
	if was, ok := s.held[nodeID]; ok && was == seq {
		return HeldText(seq, s.sent.Load())
	}
	// Before the first pass (a server just started, its agents
	// reconnecting at once) nothing was read yet: one read serves them
	// all. Only an agent still ahead of it costs a write.
	q, err := c.store.StateSeq(ctx)
	if err == nil {
		raiseTo(&s.sent, q.Sent())
		if seq <= q.Sent() {
			return ""
		}
		q, err = c.store.HoldStateSeq(ctx, seq)
	}
	if err != nil {
		c.log.Error("recording a node ahead of the store", "node_id", nodeID, "state_seq", seq, "err", err)
		return ""
	}
	raiseTo(&s.sent, q.Sent())
	if seq <= q.Sent() {
		return ""
	}
	if s.held == nil {
		s.held = map[string]uint64{}
	}
	if _, ok := s.held[nodeID]; !ok {
		s.nheld.Add(1)
	}
	s.held[nodeID] = seq
	text := HeldText(seq, q.Sent())
	c.log.Warn("node held: its agent applied a newer state than this server's store has; the store may have been restored from an older backup. "+
		"The agent keeps its containers until 'dockfleet store accept-restore'", "node_id", nodeID, "agent_state_seq", seq, "store_state_seq", q.Sent())
	c.appendEvents(ctx, []api.Event{{Time: c.clock.Now().UTC(), Project: api.DefaultProject, Type: "node.held",
		Message: fmt.Sprintf("node %s %s", nodeID, text)}})
	return text
}

// AcceptRestore is what accepting a restored state did.
type AcceptRestore struct {
	// Accepted is false when nothing was held: nothing changed.
	Accepted bool
	// From is the sequence sent before, To the one sent from now on, above
	// every sequence an agent reported.
	From, To uint64
	// Nodes are the nodes that were held, by ID.
	Nodes []string
}

// AcceptRestore makes the store's state rule over agents that are ahead of
// it (they applied a newer state before the store was restored from an
// older backup): it raises the store's sequence above every sequence an
// agent reported, and sends every node its desired state again, which
// the agents then apply, removing what the store does not know. It also
// ends the hold a backup is born with (store.BackupSQLite). With nothing
// held it changes nothing.
func (c *Controller) AcceptRestore(ctx context.Context) (AcceptRestore, error) {
	s := &c.seqs
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := c.store.StateSeq(ctx)
	if err != nil {
		return AcceptRestore{}, fmt.Errorf("reading the state sequence: %w", err)
	}
	res := AcceptRestore{From: q.Sent(), To: q.Sent(), Nodes: slices.Sorted(maps.Keys(s.held))}
	top := q.Ahead
	for _, seq := range s.held {
		top = max(top, seq)
	}
	if q.Held == 0 && top <= q.Seq {
		return res, nil
	}
	q, err = c.store.RaiseStateSeq(ctx, max(q.Seq, top)+1)
	if err != nil {
		return AcceptRestore{}, fmt.Errorf("raising the state sequence: %w", err)
	}
	res.Accepted, res.To = true, q.Sent()
	raiseTo(&s.sent, res.To)
	clear(s.held)
	s.nheld.Store(0)
	s.warned.Store(false)
	s.salt.Add(1)
	c.log.Warn("restored state accepted: every node is sent its desired state again, above what its agent applied; "+
		"the agents remove what the store does not know", "from_state_seq", res.From, "to_state_seq", res.To, "held_nodes", len(res.Nodes))
	c.appendEvents(ctx, []api.Event{{Time: c.clock.Now().UTC(), Project: api.DefaultProject, Type: "store.restore-accepted",
		Message: fmt.Sprintf("the restored state was accepted (state %d → %d); %d held nodes apply it", res.From, res.To, len(res.Nodes))}})
	c.Need(ReloadAll)
	return res, nil
}

// appendEvents records events that are no step of a pass; a failure is
// logged, as the change they tell of is made.
func (c *Controller) appendEvents(ctx context.Context, evs []api.Event) {
	if err := c.store.AppendEvents(ctx, evs); err != nil {
		c.log.Error("recording events", "err", err)
		return
	}
	c.notify()
}
