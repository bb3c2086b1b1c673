package agentsvc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/sparselog"
	"github.com/dockfleet/dockfleet/internal/store"
)

// Gate keeps node identities that were revoked, removed or replaced by
// a re-enrollment off the agent endpoint. The handshake consults it
// (pki.AgentServerTLS), and so does every call; and since a revoked node's
// connection may be up already, it tracks the connections of every node
// with a certificate and closes them when it refuses the node. Closing the
// connection ends its streams and calls at once, at no cost to the
// thousands of idle streams a server holds: a goroutine per stream to
// watch for revocation would cost its stack each.
//
// The store has the lasting copy (revoked_nodes, nodes.epoch); the gate is
// loaded from it at start and changed with it.
type Gate struct {
	mu      sync.Mutex
	revoked map[string]bool
	// minEpoch is, for each re-enrolled node, the epoch its certificates
	// must be of at least.
	minEpoch map[string]int64
	conns    map[string]map[*nodeConn]bool
	// refusals logs what the gate refused; a refused agent retries for
	// ever, so the log is sparse.
	refusals *sparselog.Log
}

// LoadGate loads the gate from the store st: its revoked nodes and the
// epochs of its re-enrolled ones.
func LoadGate(ctx context.Context, st store.Store, log *slog.Logger) (*Gate, error) {
	g := &Gate{revoked: map[string]bool{}, minEpoch: map[string]int64{}, conns: map[string]map[*nodeConn]bool{},
		refusals: sparselog.New(log, LimitLogInterval)}
	revoked, err := st.ListRevokedNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading revoked nodes: %w", err)
	}
	for _, r := range revoked {
		g.revoked[r.ID] = true
	}
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading nodes: %w", err)
	}
	for _, n := range nodes {
		if n.Epoch > 0 {
			g.minEpoch[n.ID] = n.Epoch
		}
	}
	return g, nil
}

// Sync reads the revoked nodes and the re-enrolled nodes' epochs from st
// again, and refuses and cuts off those it did not know of: on a replica
// of several, those another replica revoked, removed or re-enrolled. It
// returns the nodes it newly refuses.
func (g *Gate) Sync(ctx context.Context, st store.Store) ([]string, error) {
	revoked, err := st.ListRevokedNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading revoked nodes: %w", err)
	}
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading nodes: %w", err)
	}
	var newly []string
	for _, r := range revoked {
		g.mu.Lock()
		known := g.revoked[r.ID]
		g.mu.Unlock()
		if !known {
			g.Revoke(r.ID)
			newly = append(newly, r.ID)
		}
	}
	for _, n := range nodes {
		if n.Epoch > 0 {
			g.reenrolled(n.ID, n.Epoch)
		}
	}
	return newly, nil
}

// Check refuses the certificate of node id from epoch if the node was
// revoked or removed, or re-enrolled since.
func (g *Gate) Check(id string, epoch int64) error {
	g.mu.Lock()
	err := g.checkLocked(id, epoch)
	g.mu.Unlock()
	if err != nil {
		g.refusals.Warn("node certificate refused", "node_id", id, "cert_epoch", epoch, "reason", err)
	}
	return err
}

func (g *Gate) checkLocked(id string, epoch int64) error {
	if g.revoked[id] {
		return fmt.Errorf("node %s was revoked or removed; enroll the host again as a new node", id)
	}
	if min := g.minEpoch[id]; epoch < min {
		return fmt.Errorf("the certificate of node %s predates its re-enrollment (epoch %d; the node is at %d)", id, epoch, min)
	}
	return nil
}

// Revoke refuses node id from now on and closes its connections.
func (g *Gate) Revoke(id string) {
	g.mu.Lock()
	g.revoked[id] = true
	conns := g.conns[id]
	delete(g.conns, id)
	g.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// Disconnect closes node id's connections without refusing the node: the
// root of its certificate is trusted no more (a CA rotation was finished
// before the node renewed), so the handshake refuses it from now on, and
// the connections it made before must not outlive that.
func (g *Gate) Disconnect(id string) {
	g.mu.Lock()
	conns := g.conns[id]
	delete(g.conns, id)
	g.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// reenrolled refuses node id's certificates from before epoch and closes
// the connections made with them.
func (g *Gate) reenrolled(id string, epoch int64) {
	var old []*nodeConn
	g.mu.Lock()
	g.minEpoch[id] = max(g.minEpoch[id], epoch)
	for c := range g.conns[id] {
		if c.epoch < epoch {
			old = append(old, c)
			delete(g.conns[id], c)
		}
	}
	g.mu.Unlock()
	for _, c := range old {
		c.Conn.Close()
	}
}

// track registers the connection of node id made with a certificate of
// epoch. It checks again, under the lock: the node may have been revoked
// between the handshake's check and now.
func (g *Gate) track(conn net.Conn, id string, epoch int64) (net.Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.checkLocked(id, epoch); err != nil {
		return nil, err
	}
	c := &nodeConn{Conn: conn, g: g, id: id, epoch: epoch}
	if g.conns[id] == nil {
		g.conns[id] = map[*nodeConn]bool{}
	}
	g.conns[id][c] = true
	return c, nil
}

// nodeConn is a connection made with a node certificate.
type nodeConn struct {
	net.Conn
	g     *Gate
	id    string
	epoch int64
}

func (c *nodeConn) Close() error {
	c.g.mu.Lock()
	if m := c.g.conns[c.id]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(c.g.conns, c.id)
		}
	}
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// Creds are the agent endpoint TLS credentials tc with the gate's tracking
// of the connections made with a node certificate.
func (g *Gate) Creds(tc credentials.TransportCredentials) credentials.TransportCredentials {
	return gatedCreds{TransportCredentials: tc, g: g}
}

// gatedCreds are the agent endpoint's TLS credentials with the gate's
// tracking of node connections.
type gatedCreds struct {
	credentials.TransportCredentials
	g *Gate
}

func (c gatedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok {
		return conn, info, nil
	}
	id, epoch, err := pki.PeerNode(tlsInfo.State)
	if err != nil {
		return conn, info, nil // an enrolling agent, with no certificate yet
	}
	tracked, err := c.g.track(conn, id, epoch)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return tracked, info, nil
}

func (c gatedCreds) Clone() credentials.TransportCredentials {
	return gatedCreds{TransportCredentials: c.TransportCredentials.Clone(), g: c.g}
}
