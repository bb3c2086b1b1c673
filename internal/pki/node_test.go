package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSignNode(t *testing.T) {
	ca := newTestCA(t)
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	// The CSR asks for much; the certificate grants none of it.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		DNSNames:    []string{"fleet.example.com"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		URIs:        []*url.URL{{Scheme: "dockfleet", Host: "node", Path: "/other"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(csr, "n-1.a_b", 0, time.Hour)
	if err != nil {
		t.Fatalf("SignNode: %v", err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert := certs[0]
	if got, want := cert.Subject.String(), "CN=n-1.a_b"; got != want {
		t.Errorf("subject %q; want %q", got, want)
	}
	var uris []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	if want := []string{"dockfleet://node/n-1.a_b"}; !slices.Equal(uris, want) {
		t.Errorf("URIs = %q; want %q", uris, want)
	}
	if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 {
		t.Errorf("DNSNames %q, IPAddresses %v; want none", cert.DNSNames, cert.IPAddresses)
	}
	if got, want := cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage = %v; want %v", got, want)
	}
	if cert.IsCA {
		t.Errorf("node certificate is a CA")
	}
	if err := checkKeyMatches(key, cert); err != nil {
		t.Errorf("certificate is not for the CSR's key: %v", err)
	}
	if id, err := NodeID(cert); err != nil || id != "n-1.a_b" {
		t.Errorf("NodeID = %q, %v; want n-1.a_b", id, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verifying for client auth: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Errorf("node certificate verifies for server auth; want an error")
	}
}

func TestSignNodeErrors(t *testing.T) {
	ca := newTestCA(t)
	csrFor := func(t *testing.T, key any) []byte {
		t.Helper()
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	nodeKey, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	good := csrFor(t, nodeKey)
	tampered := slices.Clone(good)
	tampered[len(tampered)-1] ^= 0xff
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		csr    []byte
		nodeID string
		ttl    time.Duration
		want   error // nil: signed
	}{
		{"ECDSA P-256", good, "n1", time.Hour, nil},
		{"Ed25519", csrFor(t, edKey), "n1", time.Hour, nil},
		{"not DER", []byte("garbage"), "n1", time.Hour, ErrBadCSR},
		{"signature does not match", tampered, "n1", time.Hour, ErrBadCSR},
		{"weak curve", csrFor(t, p224), "n1", time.Hour, ErrBadCSR},
		{"empty node ID", good, "", time.Hour, ErrInvalidNodeID},
		{"slash in node ID", good, "a/b", time.Hour, ErrInvalidNodeID},
		{"dot-dot node ID", good, "..", time.Hour, ErrInvalidNodeID},
		{"leading dash", good, "-n1", time.Hour, ErrInvalidNodeID},
		{"space in node ID", good, "n 1", time.Hour, ErrInvalidNodeID},
		{"long node ID", good, strings.Repeat("n", maxNodeIDLen+1), time.Hour, ErrInvalidNodeID},
		{"longest node ID", good, strings.Repeat("n", maxNodeIDLen), time.Hour, nil},
		{"zero ttl", good, "n1", 0, ErrInvalidTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, err := ca.SignNode(tt.csr, tt.nodeID, 0, tt.ttl)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("got error %v; want %v", err, tt.want)
			}
			if (certPEM != nil) != (tt.want == nil) {
				t.Errorf("got certificate %v; want one only without an error", certPEM != nil)
			}
		})
	}
}

func TestNewCSR(t *testing.T) {
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CheckSignature: %v", err)
	}
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		t.Errorf("CSR key is not the node key")
	}
}

func TestNodeIDErrors(t *testing.T) {
	ca := newTestCA(t)
	withURIs := func(t *testing.T, uris ...string) *x509.Certificate {
		t.Helper()
		key, err := NewNodeKey()
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		cert, err := ca.issue(tmpl, key.Public(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string // "" for ErrNoNodeID
	}{
		{"server certificate", newTestServerCert(t, ca).Leaf, ""},
		{"no URI", withURIs(t), ""},
		{"other scheme", withURIs(t, "spiffe://node/n1"), ""},
		{"other host", withURIs(t, "dockfleet://server/n1"), ""},
		{"empty ID", withURIs(t, "dockfleet://node/"), ""},
		{"ID with a slash", withURIs(t, "dockfleet://node/a/b"), ""},
		{"node URI after another", withURIs(t, "https://example.com/", "dockfleet://node/n1"), "n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NodeID(tt.cert)
			if tt.want == "" {
				if !errors.Is(err, ErrNoNodeID) {
					t.Errorf("NodeID = %q, %v; want error %v", id, err, ErrNoNodeID)
				}
				return
			}
			if err != nil || id != tt.want {
				t.Errorf("NodeID = %q, %v; want %q", id, err, tt.want)
			}
		})
	}
}

func TestCheckCSR(t *testing.T) {
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckCSR(csr); err != nil {
		t.Errorf("CheckCSR of a P-256 CSR: %v", err)
	}
	weak, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, weak)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckCSR(csr); !errors.Is(err, ErrBadCSR) {
		t.Errorf("CheckCSR of a P-224 CSR = %v; want ErrBadCSR", err)
	}
	if _, err := CheckCSR([]byte("junk")); !errors.Is(err, ErrBadCSR) {
		t.Errorf("CheckCSR of junk = %v; want ErrBadCSR", err)
	}
}
