package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
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
	// The TLS configuration for the server name host: each entry's own.
	tlsConf := func(host string) *tls.Config { return typedVerification(pki.EnrollClientTLS(fp, host)) }
	if a.cfg.CACertFile != "" {
		pem, err := os.ReadFile(a.cfg.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-cert: %w", err)
		}
		if _, err = pki.CAFileClientTLS(pem); err != nil {
			return nil, fmt.Errorf("--ca-cert %s: %w", a.cfg.CACertFile, err)
		}
		tlsConf = func(host string) *tls.Config {
			conf, _ := pki.CAFileClientTLS(pem) // checked above
			conf.ServerName = host
			return conf
		}
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
	retry := newRounds(a.cfg.MaxBackoff)
	for {
		ep, n := a.servers.pick(ctx, a.clock.Now())
		resp, handshakeErr, err := a.enrollOnce(ctx, ep, tlsConf(ep.host), &agentproto.EnrollRequest{ProtocolVersion: agentproto.Version, Token: a.cfg.Token,
			Csr: csr, Name: a.cfg.Name, Labels: a.cfg.Labels, Facts: facts})
		if err == nil {
			id, err := pki.SaveIdentity(a.cfg.DataDir, key, resp.Certificate, resp.CaCertificate)
			if err != nil {
				return nil, fmt.Errorf("saving identity: %w", err)
			}
			a.log.Info("enrolled", "node_id", id.NodeID, "name", a.cfg.Name, "server", ep.addr)
			a.servers.stay()
			return id, nil
		}
		st, _ := status.FromError(err)
		switch st.Code() {
		// ResourceExhausted is a server shedding load (its limits on one
		// source address): worth a retry, as a server that is away is.
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		default:
			return nil, fmt.Errorf("%w by %s: %s", ErrEnrollRefused, ep.addr, st.Message())
		}
		if distrusted(handshakeErr) {
			return nil, fmt.Errorf("%w: not trusting %s: %w", ErrEnrollRefused, ep.addr, handshakeErr)
		}
		// Enrollment backs off from every failure alike, refused
		// connections too: it happens once, and a crowd of new agents
		// must not hammer a server that is starting.
		wait := retry.failed(n, false)
		a.log.Warn("enrollment: server unreachable or busy; retrying", "server", ep.addr, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !a.wait(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// enrollOnce makes one enrollment call on a connection of its own, closed
// after it. A connection kept between attempts would reconnect by itself
// while the agent backs off, and hold, idle, one of the few connections
// without a client certificate a server allows an address (a crowd of
// agents behind one NAT enrolling at once). handshakeErr is the error of
// the attempt's last TLS handshake, if it failed: the call's error has only
// its text.
func (a *Agent) enrollOnce(ctx context.Context, ep endpoint, tlsConf *tls.Config, req *agentproto.EnrollRequest) (_ *agentproto.EnrollResponse, handshakeErr, err error) {
	creds := recordHandshakes(credentials.NewTLS(tlsConf))
	conn, err := grpc.NewClient(target(ep), a.dialOptions(grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "enrolling with %s: %v", ep.addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentproto.NewAgentClient(conn).Enroll(ctx, req)
	if err != nil {
		return nil, creds.last.get(), err
	}
	return resp, nil, nil
}

// distrusted reports whether the agent refused the server in the TLS
// handshake whose error is err: a server we do not trust is not a server
// that is away. It goes by the error's type, not its text: a handshake the
// server cut short (a server over its limit for a source address resets
// new connections before their handshake) is none of these, and is retried.
func distrusted(err error) bool {
	var verification *tls.CertificateVerificationError // --ca-cert: the standard verification
	var untrusted *untrustedServerError                // the token's pinned CA
	return errors.As(err, &verification) || errors.As(err, &untrusted)
}

// untrustedServerError is what the agent's own verification of the server
// (pki.EnrollClientTLS's VerifyConnection) returned.
type untrustedServerError struct{ err error }

func (e *untrustedServerError) Error() string { return e.err.Error() }
func (e *untrustedServerError) Unwrap() error { return e.err }

// typedVerification makes conf's VerifyConnection, if it has one, return
// an *untrustedServerError.
func typedVerification(conf *tls.Config) *tls.Config {
	verify := conf.VerifyConnection
	if verify == nil {
		return conf
	}
	conf = conf.Clone()
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return &untrustedServerError{err}
		}
		return nil
	}
	return conf
}

// handshakeRecorder is transport credentials that keep the error of the
// last client handshake, which a gRPC call reports only as text.
type handshakeRecorder struct {
	credentials.TransportCredentials
	last *handshakeErr
}

// handshakeErr is the error of a handshakeRecorder's last handshake; nil
// after one that succeeded.
type handshakeErr struct {
	mu  sync.Mutex
	err error
}

func (e *handshakeErr) get() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func recordHandshakes(creds credentials.TransportCredentials) handshakeRecorder {
	return handshakeRecorder{TransportCredentials: creds, last: &handshakeErr{}}
}

func (r handshakeRecorder) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := r.TransportCredentials.ClientHandshake(ctx, authority, raw)
	r.last.mu.Lock()
	r.last.err = err
	r.last.mu.Unlock()
	return conn, info, err
}

func (r handshakeRecorder) Clone() credentials.TransportCredentials {
	return handshakeRecorder{TransportCredentials: r.TransportCredentials.Clone(), last: r.last}
}
