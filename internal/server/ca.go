package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/bus"
	"github.com/dockfleet/dockfleet/internal/datadir"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/restapi"
	"github.com/dockfleet/dockfleet/internal/store"
)

// The CA's roots (package pki, "A CA rotation") live in the store as one
// sealed secret, sealedCA, which every replica reads at start. A rotation
// or its finish, through any replica, replaces that secret if it is still
// what the replica read (store.ReplaceSealed), so that of two changes at
// once one wins, and tells the other replicas (caTopic). Each replica then
// takes the new roots up (caKeeper.apply): its agent endpoint trusts them,
// its data dir's ca.crt holds them, its server certificate is issued again
// by the serving root, and its agents are told (Trust). A replica reads the
// secret again every caCheckInterval too, in case a notice was lost.

// caTopic: the CA's roots changed; every replica reads them again.
const caTopic bus.Topic = "dockfleet_ca"

// caCheckInterval is how often a replica reads the CA's roots again
// without a notice.
const caCheckInterval = time.Minute

// maxPendingNames is how many of the nodes still to renew a status names.
const maxPendingNames = 50

// caStore is the part of the store the CA's roots use.
type caStore interface {
	GetSealed(ctx context.Context, name string) (store.Sealed, error)
	ReplaceSealed(ctx context.Context, old, sec store.Sealed) error
	ListNodes(ctx context.Context) ([]api.Node, error)
	ListNodeCerts(ctx context.Context) ([]store.NodeCert, error)
}

// caKeeper keeps this replica's CA roots, and what rests on them, as the
// store has them: it rotates them and finishes a rotation for the REST API
// (restapi.Authority), and takes up the changes other replicas make.
type caKeeper struct {
	st      caStore
	id      *identity // opens and seals the store's secret
	roots   *pki.Authority
	cert    *pki.ServerCert
	dataDir string
	hosts   []string
	log     *slog.Logger
	// agents and gate, set once the agent endpoint exists, are told of a
	// change: the agents learn the roots, and the connections of nodes
	// whose certificates are trusted no more close.
	agents *agentsvc.Service
	gate   *agentsvc.Gate
	// notify, on a replica of several, tells the others of a change, and
	// notices are theirs (replicas).
	notify  func(ctx context.Context)
	notices <-chan bus.Message

	// syncMu orders the reads and writes of the store's roots with their
	// taking up, so that roots read earlier are never taken up after
	// roots read or written later.
	syncMu sync.Mutex
	mu     sync.Mutex // guards blob and the server certificate's renewal
	blob   []byte     // the sealed secret of the roots taken up

	// telling runs the agent service's RootsChanged, apart: a send to an
	// agent that reads nothing waits until its stream ends. stopped, set
	// once the gRPC server stopped, ends the telling.
	tellMu  sync.Mutex
	stopped bool
	telling sync.WaitGroup
}

// caStateError is a change the CA's state does not allow now: the API
// answers 409 with its message.
type caStateError struct{ msg string }

func (e caStateError) Error() string        { return e.msg }
func (e caStateError) Is(target error) bool { return target == restapi.ErrCAState }

// TokenFingerprint is the fingerprint of the root that issues the server
// certificates: an enrolling agent verifies the server with it.
func (k *caKeeper) TokenFingerprint() string { return k.roots.Roots().Serving().Fingerprint() }

// read reads the roots from the store, and takes them up if they changed.
func (k *caKeeper) read(ctx context.Context) (store.Sealed, *pki.Roots, error) {
	k.syncMu.Lock()
	defer k.syncMu.Unlock()
	sec, err := k.st.GetSealed(ctx, sealedCA)
	if err != nil {
		return store.Sealed{}, nil, fmt.Errorf("reading the CA: %w", err)
	}
	k.mu.Lock()
	same := bytes.Equal(sec.Blob, k.blob)
	k.mu.Unlock()
	if same {
		return sec, k.roots.Roots(), nil
	}
	plain, err := k.id.open(sec)
	if err != nil {
		return store.Sealed{}, nil, err
	}
	roots, err := pki.ParseRoots("the store", plain)
	if err != nil {
		return store.Sealed{}, nil, err
	}
	k.apply(ctx, roots, sec.Blob)
	return sec, roots, nil
}

// write replaces the roots the store holds, old, with roots, and takes
// them up.
func (k *caKeeper) write(ctx context.Context, old store.Sealed, roots *pki.Roots) error {
	plain, err := roots.MarshalPEM()
	if err != nil {
		return err
	}
	blob, err := k.id.key.Seal(sealedCA, plain)
	if err != nil {
		return err
	}
	k.syncMu.Lock()
	defer k.syncMu.Unlock()
	err = k.st.ReplaceSealed(ctx, old, store.Sealed{Name: sealedCA, KeyID: k.id.key.ID(), Blob: blob})
	if errors.Is(err, store.ErrConflict) {
		return caStateError{"the CA was changed through another server replica at the same moment: see dockfleet ca, then try again"}
	}
	if err != nil {
		return fmt.Errorf("storing the CA: %w", err)
	}
	k.apply(ctx, roots, blob)
	if k.notify != nil {
		k.notify(ctx)
	}
	return nil
}

// Rotate starts a CA rotation: a new root signs node certificates from now
// on, and agents renew theirs with it.
func (k *caKeeper) Rotate(ctx context.Context) (api.CA, error) {
	sec, roots, err := k.read(ctx)
	if err != nil {
		return api.CA{}, err
	}
	next, err := roots.Rotate()
	if errors.Is(err, pki.ErrRotating) {
		return api.CA{}, caStateError{fmt.Sprintf("a CA rotation is in progress already (to root %s): finish it with dockfleet ca finish",
			roots.Active().Fingerprint())}
	}
	if err != nil {
		return api.CA{}, err
	}
	if err := k.write(ctx, sec, next); err != nil {
		return api.CA{}, err
	}
	k.log.Warn("CA rotation started: agents renew their certificates with the new root; finish it with dockfleet ca finish once every node has",
		"active", next.Active().Fingerprint(), "retiring", roots.Active().Fingerprint())
	return k.status(ctx, next)
}

// Finish ends a CA rotation: the retiring root is trusted no more. Unless
// force is set it refuses while a node still holds a certificate of
// another root than the active one; with force, those nodes are cut off.
func (k *caKeeper) Finish(ctx context.Context, force bool) (api.CA, error) {
	sec, roots, err := k.read(ctx)
	if err != nil {
		return api.CA{}, err
	}
	if !roots.Rotating() {
		return api.CA{}, caStateError{"no CA rotation is in progress: start one with dockfleet ca rotate"}
	}
	st, err := k.status(ctx, roots)
	if err != nil {
		return api.CA{}, err
	}
	if st.Pending > 0 && !force {
		return api.CA{}, caStateError{fmt.Sprintf("%d of %d nodes still hold certificates of an older root than the active one (%s): "+
			"connected agents renew theirs within minutes; wait for the others (dockfleet ca), remove the nodes that are gone for good (dockfleet node rm), "+
			"or finish anyway with --force, which cuts those nodes off until they enroll again (dockfleet token create --node NAME)",
			st.Pending, st.Nodes, strings.Join(st.PendingNodes, ", "))}
	}
	next, err := roots.Finish()
	if err != nil {
		return api.CA{}, err
	}
	if err := k.write(ctx, sec, next); err != nil {
		return api.CA{}, err
	}
	k.log.Warn("CA rotation finished: the retiring root is trusted no more", "active", next.Active().Fingerprint(),
		"retired", roots.Serving().Fingerprint(), "forced", force, "nodes_cut_off", st.Pending)
	return k.status(ctx, next)
}

// Status describes the CA as the store has it.
func (k *caKeeper) Status(ctx context.Context) (api.CA, error) {
	_, roots, err := k.read(ctx)
	if err != nil {
		return api.CA{}, err
	}
	return k.status(ctx, roots)
}

func (k *caKeeper) status(ctx context.Context, roots *pki.Roots) (api.CA, error) {
	nodes, err := k.st.ListNodes(ctx)
	if err != nil {
		return api.CA{}, err
	}
	certs, err := k.st.ListNodeCerts(ctx)
	if err != nil {
		return api.CA{}, err
	}
	issuer := map[string]string{}
	for _, c := range certs {
		issuer[c.NodeID] = c.CA
	}
	active := roots.Active().Fingerprint()
	st := api.CA{Rotating: roots.Rotating(), TokenFingerprint: roots.Serving().Fingerprint(), Bundle: string(roots.BundlePEM()),
		PendingNodes: []string{}}
	held := map[string]int{}
	for _, n := range nodes {
		if n.State == api.NodeRevoked {
			continue
		}
		st.Nodes++
		fp := issuer[n.ID]
		held[fp]++
		if fp != active {
			st.Pending++
			if len(st.PendingNodes) < maxPendingNames {
				st.PendingNodes = append(st.PendingNodes, n.Name)
			}
		}
	}
	st.Unknown = held[""]
	for _, r := range roots.List() {
		st.Roots = append(st.Roots, api.CARoot{Fingerprint: r.Fingerprint, State: string(r.State), Serving: r.Serving,
			NotBefore: r.NotBefore, NotAfter: r.NotAfter, Nodes: held[r.Fingerprint]})
	}
	return st, nil
}

// apply takes roots, sealed as blob, up on this replica, unless it has
// them already: the agent endpoint trusts them from the next handshake,
// the data dir's ca.crt holds them, the server certificate is issued again
// if its root no longer serves, the connected agents are told, and, once a
// rotation finished, the nodes whose newest certificate is of a root
// trusted no more are disconnected.
func (k *caKeeper) apply(ctx context.Context, roots *pki.Roots, blob []byte) {
	k.mu.Lock()
	if bytes.Equal(blob, k.blob) {
		k.mu.Unlock()
		return
	}
	k.blob = blob
	k.roots.Set(roots)
	if err := writeCACert(k.dataDir, roots); err != nil {
		k.log.Error("writing the CA roots to the data dir; clients that copy it get the old ones", "err", err)
	}
	k.checkServerCertLocked()
	k.mu.Unlock()
	k.log.Info("CA roots taken up", "active", roots.Active().Fingerprint(), "serving", roots.Serving().Fingerprint(), "rotating", roots.Rotating())
	k.tellAgents()
	if k.gate != nil && !roots.Rotating() {
		k.disconnectUntrusted(ctx, roots)
	}
}

// tellAgents tells the agents connected here the roots now. Each message
// is made as it is sent, of the roots then, so a later change is never
// overtaken by an earlier one.
func (k *caKeeper) tellAgents() {
	k.tellMu.Lock()
	defer k.tellMu.Unlock()
	if k.agents == nil || k.stopped {
		return
	}
	k.telling.Go(k.agents.RootsChanged)
}

// stop waits for the agents being told the roots, once the gRPC server
// stopped (which ended their streams); no agent is told after it.
func (k *caKeeper) stop() {
	k.tellMu.Lock()
	k.stopped = true
	k.tellMu.Unlock()
	k.telling.Wait()
}

// disconnectUntrusted closes the connections of the nodes whose newest
// certificate is of a root roots do not trust: a rotation was finished
// with --force before they renewed.
func (k *caKeeper) disconnectUntrusted(ctx context.Context, roots *pki.Roots) {
	nodes, err := k.st.ListNodes(ctx)
	if err != nil {
		k.log.Warn("listing nodes to cut off those of a root trusted no more; their connections stay until they close", "err", err)
		return
	}
	certs, err := k.st.ListNodeCerts(ctx)
	if err != nil {
		k.log.Warn("listing node certificates to cut off those of a root trusted no more; their connections stay until they close", "err", err)
		return
	}
	trusted := map[string]bool{}
	for _, c := range certs {
		trusted[c.NodeID] = roots.Trusts(c.CA)
	}
	for _, n := range nodes {
		if !trusted[n.ID] && n.State != api.NodeRevoked {
			k.gate.Disconnect(n.ID)
		}
	}
}

// checkServerCert issues the server certificate again when it is due
// (pki.ServerCertificateDue) or not of the serving root, using a fresh one
// an operator put in the data dir if there is one. A failure is logged and
// tried again at the next check; the old certificate serves meanwhile.
func (k *caKeeper) checkServerCert() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.checkServerCertLocked()
}

func (k *caKeeper) checkServerCertLocked() {
	serving := k.roots.Roots().Serving()
	leaf := k.cert.Get().Leaf
	if !pki.ServerCertificateDue(leaf, time.Now()) && serving.Issued(leaf) {
		return
	}
	cert, err := pki.LoadOrCreateServerCertificate(k.dataDir, serving, k.hosts)
	if err != nil {
		k.log.Error("issuing the server certificate; will retry", "expires", leaf.NotAfter, "err", err)
		return
	}
	k.cert.Set(cert)
	k.log.Info("server certificate issued", "expires", cert.Leaf.NotAfter, "ca", serving.Fingerprint())
}

// replicas makes k one replica's of several, which tell each other of a
// change on b.
func (k *caKeeper) replicas(b bus.Bus) {
	k.notices = b.Subscribe(caTopic)
	k.notify = func(ctx context.Context) {
		// Without a notice, the others read the change within
		// caCheckInterval.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := b.Publish(ctx, caTopic, ""); err != nil {
			k.log.Warn("telling the other replicas the CA changed; they read it within a minute", "err", err)
		}
	}
}

// watch reads the roots again when another replica says they changed, and
// every caCheckInterval, until ctx ends.
func (k *caKeeper) watch(ctx context.Context) {
	t := time.NewTicker(caCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.notices:
		case <-t.C:
		}
		if _, _, err := k.read(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("reading the CA roots; will retry", "err", err)
		}
	}
}

// writeCACert writes the data dir's copy of the roots, for users' --ca-cert.
func writeCACert(dataDir string, roots *pki.Roots) error {
	if err := datadir.WriteFile(filepath.Join(dataDir, pki.CACertFile), roots.BundlePEM(), datadir.FileMode); err != nil {
		return fmt.Errorf("writing the CA certificate: %w", err)
	}
	return nil
}

// SignUser issues an API client certificate of user, from the active root.
func (k *caKeeper) SignUser(csrDER []byte, user string, ttl time.Duration) ([]byte, error) {
	return k.roots.Roots().Active().SignUser(csrDER, user, ttl)
}
