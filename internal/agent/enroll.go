package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/pki"
)

// ErrEnrollRefused wraps the server's reason for refusing an enrollment.
var ErrEnrollRefused = errors.New("enrollment refused")

// enroll makes a key, sends a CSR with the token and stores the identity the
// server grants. A server that cannot be reached is retried; a refusal is final.
func (a *Agent) enroll(ctx context.Context) (*pki.Identity, error) {
	if a.cfg.Token == "" {
		return nil, fmt.Errorf("%w: this agent has no identity in %s yet and no enrollment token was given (--token-file or $DOCKFLEET_AGENT_TOKEN)", ErrEnrollRefused, a.cfg.DataDir)
	}
	fp, _, _, err := pki.ParseEnrollToken(a.cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnrollRefused, err)
	}
	tlsConf := pki.EnrollClientTLS(fp, a.host)
	if a.cfg.CACertFile != "" {
		pem, err := os.ReadFile(a.cfg.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-cert: %w", err)
		}
		if tlsConf, err = pki.CAFileClientTLS(pem); err != nil {
			return nil, fmt.Errorf("--ca-cert %s: %w", a.cfg.CACertFile, err)
		}
		tlsConf.ServerName = a.host
	}
	key, err := pki.NewNodeKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return nil, err
	}
	facts := a.facts(ctx)
	backoff := time.Second
	for {
		resp, err := a.enrollOnce(ctx, tlsConf, &agentproto.EnrollRequest{ProtocolVersion: agentproto.Version, Token: a.cfg.Token,
			Csr: csr, Name: a.cfg.Name, Labels: a.cfg.Labels, Facts: facts})
		if err == nil {
			id, err := pki.SaveIdentity(a.cfg.DataDir, key, resp.Certificate, resp.CaCertificate)
			if err != nil {
				return nil, fmt.Errorf("saving identity: %w", err)
			}
			a.log.Info("enrolled", "node_id", id.NodeID, "name", a.cfg.Name)
			return id, nil
		}
		st, _ := status.FromError(err)
		switch st.Code() {
		// ResourceExhausted is a server shedding load (its limits on one
		// source address): worth a retry, as a server that is away is.
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		default:
			return nil, fmt.Errorf("%w by %s: %s", ErrEnrollRefused, a.addr, st.Message())
		}
		if distrusted(st.Message()) {
			return nil, fmt.Errorf("%w: not trusting %s: %s", ErrEnrollRefused, a.addr, st.Message())
		}
		wait := jittered(backoff)
		a.log.Warn("enrollment: server unreachable or busy; retrying", "server", a.addr, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !a.wait(ctx, wait) {
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, a.cfg.MaxBackoff)
	}
}

// enrollOnce makes one enrollment call on a connection of its own, closed
// after it. A connection kept between attempts would reconnect by itself
// while the agent backs off, and hold, idle, one of the few connections
// without a client certificate a server allows an address (a crowd of
// agents behind one NAT enrolling at once).
func (a *Agent) enrollOnce(ctx context.Context, tlsConf *tls.Config, req *agentproto.EnrollRequest) (*agentproto.EnrollResponse, error) {
	conn, err := grpc.NewClient(a.addr, a.dialOptions(grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "enrolling with %s: %v", a.addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return agentproto.NewAgentClient(conn).Enroll(ctx, req)
}

// distrusted reports whether a call failed because the agent does not
// trust the server: a server we refuse to trust is not a server that is
// away. A handshake the server cut short is not that: a server over its
// limit for a source address resets new connections before their
// handshake.
func distrusted(msg string) bool {
	if !strings.Contains(msg, "authentication handshake failed") {
		return false
	}
	for _, cut := range []string{"EOF", "connection reset by peer", "broken pipe"} {
		if strings.Contains(msg, cut) {
			return false
		}
	}
	return true
}
