// Package fanout delivers desired states to connected agents: it holds the
// session of each connected agent's stream and each node's last desired
// state, with its key, its generation and the generation the agent acked.
//
// The controller builds and hashes desired states outside any lock (Key);
// Fanout's own lock covers only the map of nodes and the swap of a state,
// and no heartbeat ever takes it (heartbeats go to package liveness).
package fanout

import (
	"crypto/sha256"
	"encoding/hex"
	"iter"
	"sync"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// Fanout holds the sessions and last desired states of nodes. Its methods
// are safe for concurrent use.
type Fanout struct {
	mu    sync.Mutex
	nodes map[string]*node
	// gen numbers desired states. It starts from the clock so that numbers
	// keep growing across server restarts.
	gen uint64
}

type node struct {
	session *Session
	desired *agentproto.DesiredState
	key     string // Key of desired, to skip unchanged pushes
	acked   uint64
}

// New returns a Fanout whose generations start from clock's time.
func New(clock clockwork.Clock) *Fanout {
	return &Fanout{nodes: map[string]*node{}, gen: uint64(clock.Now().UnixNano())}
}

func (f *Fanout) node(id string) *node {
	n := f.nodes[id]
	if n == nil {
		n = &node{}
		f.nodes[id] = n
	}
	return n
}

// Connect registers node id's new stream, replacing an older one of the
// same node, and queues the node's current desired state on it.
func (f *Fanout) Connect(id string) *Session {
	sess := newSession(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.node(id)
	if n.session != nil {
		n.session.fail(ErrReplaced)
	}
	n.session = sess
	if n.desired != nil {
		sess.push(n.desired)
	}
	return sess
}

// Disconnect unregisters sess, unless a newer stream replaced it.
func (f *Fanout) Disconnect(sess *Session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[sess.nodeID]; n != nil && n.session == sess {
		n.session = nil
	}
}

// Connected reports whether node id has a stream open.
func (f *Fanout) Connected(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[id]
	return n != nil && n.session != nil
}

// Forget drops what Fanout holds of node id, which the store no longer has.
func (f *Fanout) Forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nodes, id)
}

// Ack records that node id applied generation gen.
func (f *Fanout) Ack(id string, gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[id]; n != nil && gen > n.acked {
		n.acked = gen
	}
}

// Stale lists the nodes of ids whose desired state every pass must
// compute: those never sent one, and those last asked to pull images,
// whose requests change as pulls answer.
func (f *Fanout) Stale(ids iter.Seq[string]) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var stale []string
	for id := range ids {
		if n := f.nodes[id]; n == nil || n.desired == nil || len(n.desired.PullImages) > 0 {
			stale = append(stale, id)
		}
	}
	return stale
}

// Unchanged reports whether node id was last sent a desired state of key.
func (f *Fanout) Unchanged(id, key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[id]
	return n != nil && n.desired != nil && n.key == key
}

// Send numbers d with the next generation, keeps it as node id's desired
// state of key, and queues it on the node's stream, if one is open.
func (f *Fanout) Send(id, key string, d *agentproto.DesiredState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	d.Generation = f.gen
	n := f.node(id)
	n.desired, n.key = d, key
	if n.session != nil {
		n.session.push(d)
	}
}

// Deliver keeps d, numbered already (by the leader replica, through the
// store), as node id's desired state of key, and queues it on the node's
// stream, if one is open; a state numbered at or below the one held is
// late and dropped. It reports whether d was kept.
func (f *Fanout) Deliver(id, key string, d *agentproto.DesiredState) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.node(id)
	if n.desired != nil && d.Generation <= n.desired.Generation {
		return false
	}
	n.desired, n.key = d, key
	if n.session != nil {
		n.session.push(d)
	}
	return true
}

// Desired returns node id's last desired state, or nil. The caller must
// not change it.
func (f *Fanout) Desired(id string) *agentproto.DesiredState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[id]; n != nil {
		return n.desired
	}
	return nil
}

// Key digests what a desired state asks of a node: its instances (sorted
// by ID) and the images it must pull. Equal keys need no new push.
func Key(specs []*agentproto.InstanceSpec, pulls []string) string {
	h := sha256.New()
	for _, s := range specs {
		h.Write([]byte(s.Id + "\x00" + s.SpecHash + "\x00"))
	}
	for _, img := range pulls {
		h.Write([]byte("pull\x00" + img + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}
