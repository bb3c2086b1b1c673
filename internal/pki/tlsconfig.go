package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// ServerCert holds the certificate a server's listeners present. Set
// replaces it for the handshakes that follow, so that a certificate renewed
// while the server runs needs no restart; connections already made keep
// theirs. It is safe for concurrent use.
type ServerCert struct {
	p atomic.Pointer[tls.Certificate]
}

// NewServerCert returns a ServerCert holding cert.
func NewServerCert(cert tls.Certificate) *ServerCert {
	s := &ServerCert{}
	s.Set(cert)
	return s
}

// Set makes cert the certificate of new handshakes.
func (s *ServerCert) Set(cert tls.Certificate) { s.p.Store(&cert) }

// Get returns the current certificate.
func (s *ServerCert) Get() *tls.Certificate { return s.p.Load() }

func (s *ServerCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.p.Load(), nil
}

// AgentServerTLS is the configuration of the agents' endpoint: TLS 1.3 only,
// cert's certificate as the server's, and client certificates verified
// against the roots auth trusts at the handshake (both of them while a CA
// rotation runs) when sent. A client certificate is optional at the
// handshake because the enrollment call comes before the agent has one;
// every other call must check PeerNode. A certificate from another CA, an
// expired one, or one not meant for client authentication fails the
// handshake, and so does a node certificate that checkNode (if not nil)
// refuses: a revoked node, or one from before the node's re-enrollment.
func AgentServerTLS(auth *Authority, cert *ServerCert, checkNode func(id string, epoch int64) error) *tls.Config {
	out := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: cert.getCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      auth.Roots().Pool(),
		// Agents never resume a session (they keep no session cache),
		// and a resumed one would rest on its first handshake's
		// verification, against the roots of then: no tickets, which
		// also spares a ticket's encryption and a message a connection.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if checkNode == nil || len(cs.VerifiedChains) == 0 {
				return nil // an enrolling agent; its calls check PeerNode
			}
			id, epoch, err := PeerNode(cs)
			if err != nil {
				return err
			}
			return checkNode(id, epoch)
		},
	}
	withCurrentRoots(out, auth)
	return out
}

// apiCipherSuites are the TLS 1.2 suites the REST API offers: forward secret
// key exchange and AEAD ciphers only (Mozilla's "intermediate" profile).
// TLS 1.3 suites are not configurable and all good.
var apiCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// APIServerTLS is the configuration of the REST API's listener. Unlike the
// agent endpoint, whose only clients are our agents, the API serves scripts,
// monitoring and tools we do not control, some of which still speak TLS 1.2
// only (Java 8 before 8u261, OpenSSL 1.0.2 on older distributions), so it
// accepts TLS 1.2 with forward-secret AEAD suites, which have no known
// practical weakness; clients that can negotiate TLS 1.3, and Go's always
// do. Used with http.Server.ServeTLS, HTTP/2 is offered as well.
//
// A client may present a user's client certificate (SignUser) instead of a
// bearer token; one that presents none is not refused here.
func APIServerTLS(auth *Authority, cert *ServerCert) *tls.Config {
	out := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   apiCipherSuites,
		GetCertificate: cert.getCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      auth.Roots().Pool(),
		// A resumed session would rest on its first handshake's check of
		// the client's certificate, against the roots of then.
		SessionTicketsDisabled: true,
	}
	withCurrentRoots(out, auth)
	return out
}

// withCurrentRoots makes out verify client certificates against auth's
// roots of each handshake's moment, through the CA's rotations.
func withCurrentRoots(out *tls.Config, auth *Authority) {
	// ClientCAs cannot change in a configuration in use: each handshake
	// gets a copy of out (as its caller set it up) with the roots of the
	// moment, made once for each set of roots.
	type forRoots struct {
		roots *Roots
		conf  *tls.Config
	}
	var current atomic.Pointer[forRoots]
	out.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		r := auth.Roots()
		if c := current.Load(); c != nil && c.roots == r {
			return c.conf, nil
		}
		conf := out.Clone()
		conf.GetConfigForClient = nil
		conf.ClientCAs = r.Pool()
		current.Store(&forRoots{roots: r, conf: conf})
		return conf, nil
	}
}

// EnrollClientTLS is the configuration of an agent that enrolls: it has no
// CA file yet, only the CA fingerprint from its token. It trusts the server
// when the chain the server presents holds, after the leaf, the CA
// certificate with that fingerprint, and the leaf verifies against that CA
// alone as a server certificate for serverName (the host of the server URL,
// a DNS name or an IP address). Everything else fails the handshake; a
// fingerprint that does not match fails with ErrFingerprintMismatch, naming
// the fingerprints the server sent.
func EnrollClientTLS(caFingerprint, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The standard verification needs the CA up front; VerifyConnection
		// does it instead, once the CA is found in the chain.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection against the pinned CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			// serverName, not cs.ServerName: the latter is empty when the
			// server is dialled by IP address, which would skip the check.
			return verifyPinned(cs.PeerCertificates, caFingerprint, serverName, time.Now())
		},
	}
}

// verifyPinned verifies a server's chain against the CA in it whose
// fingerprint is caFingerprint.
func verifyPinned(chain []*x509.Certificate, caFingerprint, serverName string, now time.Time) error {
	if serverName == "" {
		return ErrNoServerName
	}
	if len(chain) == 0 {
		return fmt.Errorf("%w: the server sent no certificate", ErrFingerprintMismatch)
	}
	// The CA is looked for after the leaf, where ServerCertificate puts it.
	var got []string
	for _, cert := range chain[1:] {
		fp := fingerprint(cert.Raw)
		if fp != caFingerprint {
			got = append(got, fp)
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert)
		_, err := chain[0].Verify(x509.VerifyOptions{
			Roots:       roots,
			DNSName:     serverName,
			CurrentTime: now,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("verifying server certificate against the CA of the enrollment token: %w", err)
		}
		return nil
	}
	if len(got) == 0 {
		return fmt.Errorf("%w: the server sent no CA certificate, only its own; want CA %s", ErrFingerprintMismatch, caFingerprint)
	}
	return fmt.Errorf("%w: got %s; want %s", ErrFingerprintMismatch, strings.Join(got, ", "), caFingerprint)
}

// AgentClientTLS is the configuration of an enrolled agent: mutual TLS 1.3
// with the node certificate, trusting the fleet's CA roots only. serverName
// is the host of the server URL.
func AgentClientTLS(id *Identity, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Certificate},
		RootCAs:      id.CAPool,
		ServerName:   serverName,
	}
}

// RenewingClientTLS is AgentClientTLS for an agent whose certificate is
// renewed while it runs: each handshake presents the certificate of the
// identity current returns then, so that every connection made after a
// renewal uses the new one, whatever configuration it was dialed with. It
// trusts the roots of current() when called.
func RenewingClientTLS(current func() *Identity, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &current().Certificate, nil
		},
		RootCAs:    current().CAPool,
		ServerName: serverName,
	}
}

// CAFileClientTLS is the configuration of a REST API client (the CLI) that
// trusts the CA certificates in caPEM, such as the server's ca.crt given
// with --ca-cert, and nothing else. Like APIServerTLS it accepts TLS 1.2,
// for a proxy that may stand in front of the server.
func CAFileClientTLS(caPEM []byte) (*tls.Config, error) {
	certs, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
	}, nil
}
