package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/pki"
)

// The node's certificate is renewed over the session's connection while
// its stream goes on: at the certificate's renewal point (between half and
// four fifths of its life, pki.Identity.RenewAt), and sooner when the
// server says that the fleet's CA has a newer root than the one that
// issued it (Trust, during a CA rotation). The renewed certificate is
// stored and becomes the agent's identity: every connection made from
// then on presents it (pki.RenewingClientTLS), while the stream keeps the
// connection it has.

// identity is the node's identity now.
func (a *Agent) identity() *pki.Identity { return a.id.Load() }

// renewals renews the node certificate when it is due, over conn, until
// ctx ends, and returns ctx's error. soon asks for a renewal at a random
// moment within the duration it carries, of a certificate that is not of
// the newest root. A failure is retried every so often until the
// certificate expires.
func (a *Agent) renewals(ctx context.Context, conn *grpc.ClientConn, soon <-chan time.Duration) error {
	var (
		early     time.Time // when the server asked for a renewal by; zero: it did not
		notBefore time.Time // no renewal before: the last one's, or a failure's, retry
	)
	for {
		id := a.identity()
		at := id.RenewAt()
		if !early.IsZero() && early.Before(at) {
			at = early
		}
		if at.Before(notBefore) {
			at = notBefore
		}
		t := a.clock.NewTimer(a.clock.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case within := <-soon:
			t.Stop()
			if early.IsZero() {
				early = a.clock.Now().Add(a.servers.upTo(within))
			}
			continue
		case <-t.Chan():
		}
		// A certificate whose renewal point is past already (a clock far
		// from the server's, or a very short lifetime) is not renewed
		// again at once.
		retry := min(max(a.clock.Until(id.NotAfter)/10, 100*time.Millisecond), time.Minute)
		notBefore = a.clock.Now().Add(retry)
		if err := a.renew(ctx, conn); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.log.Warn("renewing node certificate; will retry", "err", err, "expires", id.NotAfter, "retry_in", retry)
			continue
		}
		early = time.Time{}
	}
}

// renew asks the server for a new certificate for the node's existing key
// and stores it, with the roots the server gives; only node.crt (and
// ca.crt, when the roots changed) change, so a crash midway loses nothing.
func (a *Agent) renew(ctx context.Context, conn *grpc.ClientConn) error {
	id := a.identity()
	key, ok := id.Certificate.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("node key cannot sign")
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentproto.NewAgentClient(conn).Renew(ctx, &agentproto.RenewRequest{Csr: csr, ProtocolVersion: agentproto.Version})
	if err != nil {
		return err
	}
	a.idMu.Lock()
	defer a.idMu.Unlock()
	caPEM := resp.CaCertificates
	if len(caPEM) == 0 { // a server before protocol version 4: the roots stay
		if caPEM, err = os.ReadFile(filepath.Join(a.cfg.DataDir, pki.CACertFile)); err != nil {
			return fmt.Errorf("reading CA certificate: %w", err)
		}
	}
	renewed, err := pki.SaveIdentity(a.cfg.DataDir, key, resp.Certificate, caPEM)
	if err != nil {
		return fmt.Errorf("saving renewed certificate: %w", err)
	}
	a.id.Store(renewed)
	a.log.Info("node certificate renewed", "expires", renewed.NotAfter, "renews_at", renewed.RenewAt())
	if a.cfg.Hooks.OnRenewed != nil {
		a.cfg.Hooks.OnRenewed(renewed.Leaf)
	}
	return nil
}

// takeTrust stores the CA roots the server says to trust, and asks for a
// renewal (soon) while the node's certificate is not of the newest of
// them: a CA rotation runs.
func (a *Agent) takeTrust(tr *agentproto.Trust, soon chan<- time.Duration) {
	a.idMu.Lock()
	id := a.identity()
	renew := false
	if !id.SameRoots(tr.CaCertificates) {
		next, err := pki.SaveRoots(a.cfg.DataDir, id, tr.CaCertificates)
		switch {
		case errors.Is(err, pki.ErrNotSignedByCA):
			// The rotation finished before this node renewed: the
			// server may still take a renewal on this connection.
			a.log.Warn("the server no longer trusts the CA root of this node's certificate; renewing it", "err", err)
			renew = true
		case err != nil:
			a.log.Warn("storing the CA roots the server gave", "err", err)
		default:
			id = next
			a.id.Store(next)
			a.log.Info("CA roots updated", "roots", len(next.CAs), "certificate_of_newest_root", next.FromNewestRoot())
		}
	}
	a.idMu.Unlock()
	if renew || !id.FromNewestRoot() {
		within := time.Duration(max(tr.RenewWithinMs, 0)) * time.Millisecond
		select {
		case soon <- within:
		default: // a renewal is asked for already
		}
	}
}
