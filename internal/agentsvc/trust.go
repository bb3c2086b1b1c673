package agentsvc

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/store"
)

// trustVersion is the first agent protocol version that knows Trust, and
// that trusts several CA roots.
const trustVersion = 4

// Renewals after a CA rotation are spread over renewSpreadPerAgent for
// each agent connected here, up to maxRenewSpread: 10,000 agents renew
// over 50 s, 200 a second, each a signature and a store write.
const (
	renewSpreadPerAgent = 5 * time.Millisecond
	maxRenewSpread      = 5 * time.Minute
)

// issuer is the root that signs the certificates of an agent of protocol
// version v, and the roots that agent is to trust, in PEM. An agent of
// version 4 or later gets a certificate of the active root and every root
// trusted, newest first. An older one trusts one root only, and checks its
// certificate against it: it gets a certificate of the root that issues
// the server certificates, and that root, so that it still connects while
// a rotation runs (the rotation cannot finish until it is upgraded).
func issuer(roots *pki.Roots, v uint32) (*pki.CA, []byte) {
	if v >= trustVersion {
		return roots.Active(), roots.BundlePEM()
	}
	ca := roots.Serving()
	return ca, ca.CertPEM()
}

// recordCert records certPEM, just signed by signer, as node id's newest
// certificate: a CA rotation finishes once every node holds one of the
// active root. A failure is logged: the record then names an older root,
// so the node counts as still to renew, which errs on the safe side.
func (a *Service) recordCert(ctx context.Context, id string, signer *pki.CA, certPEM []byte) {
	c := store.NodeCert{NodeID: id, CA: signer.Fingerprint(), IssuedAt: time.Now().UTC()}
	if block, _ := pem.Decode(certPEM); block != nil {
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			c.NotAfter = cert.NotAfter
		}
	}
	if err := a.store.RecordNodeCert(ctx, c); err != nil {
		a.log.Warn("recording a node's new certificate; the node counts as holding its older one", "node_id", id, "err", err)
	}
}

// trust returns what builds the Trust message of the roots at the moment
// it is called, for agents to renew within spread.
func (a *Service) trust(spread time.Duration) func() *agentproto.ServerMessage {
	return func() *agentproto.ServerMessage {
		return &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Trust{Trust: &agentproto.Trust{
			CaCertificates: a.ca.Roots().BundlePEM(), RenewWithinMs: spread.Milliseconds()}}}
	}
}

// renewSpread is the time over which the agents connected here renew
// after a rotation.
func (a *Service) renewSpread() time.Duration {
	a.streamsMu.Lock()
	n := len(a.streams)
	a.streamsMu.Unlock()
	return min(time.Duration(n)*renewSpreadPerAgent, maxRenewSpread)
}

// welcomed tells a stream's agent, just welcomed, the roots to trust: from
// now on RootsChanged tells it of a change.
func (a *Service) welcomed(st *agentStream) error {
	if st.version < trustVersion {
		return nil
	}
	return st.sendTrust(a.trust(a.renewSpread()), true)
}

// RootsChanged tells every agent connected here, and welcomed, the roots
// now trusted (Trust): during a rotation, those with a certificate of an
// older root renew it over a spread of time. Agents before protocol
// version 4 are not told. A few goroutines send, and it returns once every
// agent was told. A send blocks only on an agent that reads nothing, and
// ends with its stream: the caller runs it apart, and waits for it once
// the gRPC server stopped.
func (a *Service) RootsChanged() {
	a.streamsMu.Lock()
	var told []*agentStream
	for st := range a.streams {
		if st.version >= trustVersion {
			told = append(told, st)
		}
	}
	a.streamsMu.Unlock()
	a.log.Info("telling the connected agents the CA roots", "agents", len(told))
	build := a.trust(min(time.Duration(len(told))*renewSpreadPerAgent, maxRenewSpread))
	work := make(chan *agentStream)
	var senders sync.WaitGroup
	for range min(drainSenders, len(told)) {
		senders.Go(func() {
			for st := range work {
				_ = st.sendTrust(build, false) // a stream that failed is gone already
			}
		})
	}
	for _, st := range told {
		work <- st
	}
	close(work)
	senders.Wait()
}

// sendTrust sends the message build makes, under the stream's lock, so
// that of two Trust messages the one sent last carries the newest roots. A
// stream whose agent was not yet welcomed is skipped, unless welcome says
// this is its welcome: the agent's first message must be Welcome.
func (s *agentStream) sendTrust(build func() *agentproto.ServerMessage, welcome bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return errStreamEnded
	}
	if welcome {
		s.welcomed = true
	} else if !s.welcomed {
		return nil
	}
	return s.stream.Send(build())
}
