package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnrollClientTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	serverCert := newTestServerCert(t, ca)

	// A server whose own CA signed its leaf, and who shows our CA's
	// certificate too, hoping the client looks no further than the
	// fingerprint.
	impostor := newTestServerCert(t, other)
	impostor.Certificate = [][]byte{impostor.Certificate[0], ca.cert.Raw}

	// A certificate of our CA for the right address but meant for clients,
	// as a node's is: a stolen node key must not pass for the server.
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	clientLeaf, err := ca.issue(&x509.Certificate{
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientOnly := tls.Certificate{Certificate: [][]byte{clientLeaf.Raw, ca.cert.Raw}, PrivateKey: key}

	leafOnly := serverCert
	leafOnly.Certificate = leafOnly.Certificate[:1]

	tests := []struct {
		name        string
		serverCert  tls.Certificate
		fingerprint string
		serverName  string
		wantErr     error  // for errors.Is; nil with wantMsg "" means success
		wantMsg     string // a part of the client's error
	}{
		{"by IP", serverCert, ca.Fingerprint(), "127.0.0.1", nil, ""},
		{"by name", serverCert, ca.Fingerprint(), "localhost", nil, ""},
		{"other CA", serverCert, other.Fingerprint(), "127.0.0.1", ErrFingerprintMismatch,
			"pki: server CA fingerprint does not match the enrollment token: got " + ca.Fingerprint() + "; want " + other.Fingerprint()},
		{"no CA in chain", leafOnly, ca.Fingerprint(), "127.0.0.1", ErrFingerprintMismatch, "the server sent no CA certificate"},
		{"leaf of another CA next to ours", impostor, ca.Fingerprint(), "127.0.0.1", nil, "certificate signed by unknown authority"},
		{"client certificate as server's", clientOnly, ca.Fingerprint(), "127.0.0.1", nil, "incompatible key usage"},
		{"name not in certificate", serverCert, ca.Fingerprint(), "fleet.example.com", nil, "not fleet.example.com"},
		{"IP not in certificate", serverCert, ca.Fingerprint(), "10.0.0.5", nil, "not 10.0.0.5"},
		{"no server name", serverCert, ca.Fingerprint(), "", ErrNoServerName, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, serverErr, clientErr := handshake(t, AgentServerTLS(NewAuthority(NewRoots(ca)), NewServerCert(tt.serverCert), nil), EnrollClientTLS(tt.fingerprint, tt.serverName))
			if tt.wantErr == nil && tt.wantMsg == "" {
				if clientErr != nil || serverErr != nil {
					t.Fatalf("client error %v, server error %v; want none", clientErr, serverErr)
				}
				// Enrollment comes without a client certificate.
				if _, _, err := PeerNode(state); !errors.Is(err, ErrNoClientCert) {
					t.Errorf("PeerNode: got error %v; want %v", err, ErrNoClientCert)
				}
				return
			}
			if clientErr == nil || serverErr == nil {
				t.Fatalf("client error %v, server error %v; want both", clientErr, serverErr)
			}
			if tt.wantErr != nil && !errors.Is(clientErr, tt.wantErr) {
				t.Errorf("client error %v; want %v", clientErr, tt.wantErr)
			}
			if !strings.Contains(clientErr.Error(), tt.wantMsg) {
				t.Errorf("client error %q; want it to contain %q", clientErr, tt.wantMsg)
			}
		})
	}
}

func TestAgentMTLS(t *testing.T) {
	ca := newTestCA(t)
	id := newTestIdentity(t, ca, "node-42", time.Hour)
	for _, serverName := range []string{"127.0.0.1", "localhost"} {
		t.Run(serverName, func(t *testing.T) {
			state, serverErr, clientErr := handshake(t, AgentServerTLS(NewAuthority(NewRoots(ca)), NewServerCert(newTestServerCert(t, ca)), nil), AgentClientTLS(id, serverName))
			if clientErr != nil || serverErr != nil {
				t.Fatalf("client error %v, server error %v; want none", clientErr, serverErr)
			}
			if state.Version != tls.VersionTLS13 {
				t.Errorf("version %s; want TLS 1.3", tls.VersionName(state.Version))
			}
			if got, _, err := PeerNode(state); err != nil || got != "node-42" {
				t.Errorf("PeerNode = %q, %v; want node-42", got, err)
			}
		})
	}
}

func TestAgentServerRefuses(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	valid := newTestIdentity(t, ca, "n1", time.Hour)

	past := *ca
	past.now = func() time.Time { return time.Now().Add(-48 * time.Hour) }
	expired := newTestIdentity(t, &past, "n1", time.Hour)

	tls12 := AgentClientTLS(valid, "127.0.0.1")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	// A node of another CA that trusts our server: the server must not
	// trust it back.
	foreign := AgentClientTLS(newTestIdentity(t, other, "n1", time.Hour), "127.0.0.1")
	foreign.RootCAs = ca.Pool()

	// The server's own certificate is of the right CA but not for clients.
	serverAsClient := AgentClientTLS(valid, "127.0.0.1")
	serverAsClient.Certificates = []tls.Certificate{newTestServerCert(t, ca)}

	tests := []struct {
		name      string
		client    *tls.Config
		serverMsg string // a part of the server's error
	}{
		{"certificate of another CA", foreign, "certificate signed by unknown authority"},
		{"expired certificate", AgentClientTLS(expired, "127.0.0.1"), "certificate has expired"},
		{"server certificate as client's", serverAsClient, "incompatible key usage"},
		{"TLS 1.2", tls12, "client offered only unsupported versions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, serverErr, clientErr := handshake(t, AgentServerTLS(NewAuthority(NewRoots(ca)), NewServerCert(newTestServerCert(t, ca)), nil), tt.client)
			if serverErr == nil || clientErr == nil {
				t.Fatalf("client error %v, server error %v (peer certificates %d); want both", clientErr, serverErr, len(state.PeerCertificates))
			}
			if !strings.Contains(serverErr.Error(), tt.serverMsg) {
				t.Errorf("server error %q; want it to contain %q", serverErr, tt.serverMsg)
			}
		})
	}
}

func TestAgentClientRefusesOtherCA(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	id := newTestIdentity(t, ca, "n1", time.Hour)
	_, serverErr, clientErr := handshake(t, AgentServerTLS(NewAuthority(NewRoots(other)), NewServerCert(newTestServerCert(t, other)), nil), AgentClientTLS(id, "127.0.0.1"))
	var unknown x509.UnknownAuthorityError
	if !errors.As(clientErr, &unknown) {
		t.Errorf("client error %v; want %T", clientErr, unknown)
	}
	if serverErr == nil {
		t.Errorf("server error nil; want one")
	}
}

func TestAPIServerTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	trusting := func(t *testing.T, ca *CA, maxVersion uint16) *tls.Config {
		cfg, err := CAFileClientTLS(ca.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = "localhost"
		cfg.MaxVersion = maxVersion
		return cfg
	}
	tests := []struct {
		name        string
		client      *tls.Config
		wantVersion uint16 // 0: refused
	}{
		{"TLS 1.3", trusting(t, ca, 0), tls.VersionTLS13},
		{"TLS 1.2", trusting(t, ca, tls.VersionTLS12), tls.VersionTLS12},
		{"TLS 1.1", trusting(t, ca, tls.VersionTLS11), 0},
		{"client trusting another CA", trusting(t, other, 0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, serverErr, clientErr := handshake(t, APIServerTLS(NewAuthority(NewRoots(ca)), NewServerCert(newTestServerCert(t, ca))), tt.client)
			if tt.wantVersion == 0 {
				if clientErr == nil || serverErr == nil {
					t.Fatalf("client error %v, server error %v; want both", clientErr, serverErr)
				}
				return
			}
			if clientErr != nil || serverErr != nil {
				t.Fatalf("client error %v, server error %v; want none", clientErr, serverErr)
			}
			if state.Version != tt.wantVersion {
				t.Errorf("version %s; want %s", tls.VersionName(state.Version), tls.VersionName(tt.wantVersion))
			}
			if state.Version == tls.VersionTLS12 && !slices.Contains(apiCipherSuites, state.CipherSuite) {
				t.Errorf("cipher suite %s is not one of apiCipherSuites", tls.CipherSuiteName(state.CipherSuite))
			}
		})
	}
}

func TestCAFileClientTLSErrors(t *testing.T) {
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":      nil,
		"not PEM":    []byte("-----BEGIN garbage"),
		"a key only": keyPEM,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := CAFileClientTLS(data); !errors.Is(err, ErrInvalidPEM) {
				t.Errorf("got error %v; want %v", err, ErrInvalidPEM)
			}
		})
	}
}

// A node certificate carries its enrollment epoch, and the agent endpoint
// refuses at the handshake what its checkNode refuses.
func TestAgentServerChecksNode(t *testing.T) {
	ca := newTestCA(t)
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(csr, "node-7", 3, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := SaveIdentity(t.TempDir(), key, certPEM, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	var seenID string
	var seenEpoch int64
	allow := func(id string, epoch int64) error { seenID, seenEpoch = id, epoch; return nil }
	state, serverErr, clientErr := handshake(t, AgentServerTLS(NewAuthority(NewRoots(ca)), NewServerCert(newTestServerCert(t, ca)), allow), AgentClientTLS(id, "127.0.0.1"))
	if serverErr != nil || clientErr != nil {
		t.Fatalf("client error %v, server error %v; want none", clientErr, serverErr)
	}
	if gotID, gotEpoch, err := PeerNode(state); err != nil || gotID != "node-7" || gotEpoch != 3 || seenID != "node-7" || seenEpoch != 3 {
		t.Errorf("PeerNode = %q, %d, %v; checkNode saw %q, %d; want node-7, 3", gotID, gotEpoch, err, seenID, seenEpoch)
	}
	refused := errors.New("node-7 was revoked")
	deny := func(string, int64) error { return refused }
	_, serverErr, _ = handshake(t, AgentServerTLS(NewAuthority(NewRoots(ca)), NewServerCert(newTestServerCert(t, ca)), deny), AgentClientTLS(id, "127.0.0.1"))
	if !errors.Is(serverErr, refused) {
		t.Errorf("server error %v; want %v", serverErr, refused)
	}
}
