package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSaveLoadIdentity(t *testing.T) {
	ca := newTestCA(t)
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(csr, "node-7", 0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	saved, err := SaveIdentity(dir, key, certPEM, ca.CertPEM())
	if err != nil {
		t.Fatalf("SaveIdentity: %v", err)
	}
	if got := fileMode(t, filepath.Join(dir, nodeKeyFile)); got != 0o600 {
		t.Errorf("node.key mode = %v; want 0600", got)
	}

	id, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	if id.NodeID != "node-7" {
		t.Errorf("NodeID = %q; want node-7", id.NodeID)
	}
	if !id.Leaf.Equal(saved.Leaf) {
		t.Errorf("loaded leaf differs from the saved one")
	}
	if !id.NotAfter.Equal(id.Leaf.NotAfter) {
		t.Errorf("NotAfter = %v; want the leaf's, %v", id.NotAfter, id.Leaf.NotAfter)
	}
	if key, ok := id.Certificate.PrivateKey.(crypto.Signer); !ok || checkKeyMatches(key, id.Leaf) != nil {
		t.Errorf("loaded key %T does not match the leaf", id.Certificate.PrivateKey)
	}
	if _, err := id.Leaf.Verify(x509.VerifyOptions{Roots: id.CAPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify against CAPool: %v", err)
	}
	caOnDisk, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(caOnDisk) != string(ca.CertPEM()) {
		t.Errorf("ca.crt is not the CA certificate")
	}
}

func TestLoadIdentityNone(t *testing.T) {
	for name, dir := range map[string]string{
		"empty dir":   t.TempDir(),
		"missing dir": filepath.Join(t.TempDir(), "nope"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadIdentity(dir); !errors.Is(err, ErrNoIdentity) {
				t.Errorf("got error %v; want %v", err, ErrNoIdentity)
			}
		})
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	// save stores a fresh identity of ca in dir.
	save := func(t *testing.T, dir string) {
		key, err := NewNodeKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := NewCSR(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := ca.SignNode(csr, "n1", 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := SaveIdentity(dir, key, certPEM, ca.CertPEM()); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  error // nil: any error but ErrNoIdentity
	}{
		{"key missing", func(t *testing.T, dir string) {
			save(t, dir)
			if err := os.Remove(filepath.Join(dir, nodeKeyFile)); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"CA missing", func(t *testing.T, dir string) {
			save(t, dir)
			if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"key of another identity", func(t *testing.T, dir string) {
			save(t, dir)
			keyPEM, err := os.ReadFile(filepath.Join(dir, nodeKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			save(t, dir)
			if err := os.WriteFile(filepath.Join(dir, nodeKeyFile), keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ErrKeyMismatch},
		{"CA replaced", func(t *testing.T, dir string) {
			save(t, dir)
			if err := os.WriteFile(filepath.Join(dir, CACertFile), other.CertPEM(), 0o644); err != nil {
				t.Fatal(err)
			}
		}, ErrNotSignedByCA},
		{"certificate is not PEM", func(t *testing.T, dir string) {
			save(t, dir)
			if err := os.WriteFile(filepath.Join(dir, nodeCertFile), []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, ErrInvalidPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			id, err := LoadIdentity(dir)
			if err == nil || errors.Is(err, ErrNoIdentity) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("got error %v; want %v", err, tt.want)
			}
			if id != nil {
				t.Errorf("got an identity with the error")
			}
		})
	}
}

func TestSaveIdentityRefuses(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(csr, "n1", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCertPEM, err := other.SignNode(csr, "n1", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	server := newTestServerCert(t, ca)
	serverPEM := encodePEM(pemCertificate, server.Leaf.Raw)

	tests := []struct {
		name    string
		key     crypto.Signer
		certPEM []byte
		caPEM   []byte
		want    error
	}{
		{"key of another node", wrongKey, certPEM, ca.CertPEM(), ErrKeyMismatch},
		{"certificate of another CA", key, otherCertPEM, ca.CertPEM(), ErrNotSignedByCA},
		{"server certificate", server.PrivateKey.(crypto.Signer), serverPEM, ca.CertPEM(), ErrNoNodeID},
		{"no certificate", key, nil, ca.CertPEM(), ErrInvalidPEM},
		{"no CA", key, certPEM, []byte("garbage"), ErrInvalidPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := SaveIdentity(dir, tt.key, tt.certPEM, tt.caPEM)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v; want %v", err, tt.want)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("SaveIdentity wrote %d files before failing; want none", len(entries))
			}
		})
	}
}

// A certificate renews at a point between half and four fifths of its life
// (counted from issue, not from the backdated NotBefore), the same point
// every time it is loaded, and the points of a fleet's certificates spread
// over that span.
func TestRenewAt(t *testing.T) {
	ca := newTestCA(t)
	const n = 200
	lo, hi := 1.0, 0.0
	for i := range n {
		id := newTestIdentity(t, ca, fmt.Sprintf("n%d", i), 30*time.Hour)
		issued := id.Leaf.NotBefore.Add(backdate)
		life := id.Leaf.NotAfter.Sub(issued)
		at := id.RenewAt()
		f := float64(at.Sub(issued)) / float64(life)
		if f < 0.5 || f >= 0.8 {
			t.Fatalf("certificate %d renews at %.3f of its life; want within [0.5, 0.8)", i, f)
		}
		lo, hi = min(lo, f), max(hi, f)
		again, err := parseIdentity(mustKeyPEM(t, id), encodePEM(pemCertificate, id.Leaf.Raw), ca.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		if !again.RenewAt().Equal(at) {
			t.Fatalf("certificate %d renews at %v, and loaded again at %v; want the same point", i, at, again.RenewAt())
		}
		if id.NeedsRenewal(at.Add(-time.Nanosecond)) || !id.NeedsRenewal(at) {
			t.Fatalf("NeedsRenewal around RenewAt %v: want false just before, true at it", at)
		}
	}
	// 200 points uniform over [0.5, 0.8): the odds that none is below 0.55
	// or none above 0.75 are (5/6)^200, nil.
	if lo > 0.55 || hi < 0.75 {
		t.Errorf("the renewal points of %d certificates span [%.3f, %.3f]; want them spread over [0.5, 0.8)", n, lo, hi)
	}
}

func mustKeyPEM(t *testing.T, id *Identity) []byte {
	t.Helper()
	key, err := marshalKeyPEM(id.Certificate.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	return key
}
