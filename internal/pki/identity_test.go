package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
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

func TestNeedsRenewal(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	// As the CA issues it: NotBefore backdated against clock skew.
	id := &Identity{Leaf: &x509.Certificate{NotBefore: start.Add(-backdate), NotAfter: start.Add(30 * time.Hour)}}
	tests := []struct {
		at   time.Duration
		want bool
	}{
		{-time.Hour, false},
		{0, false},
		{19*time.Hour + 59*time.Minute, false},
		{20 * time.Hour, true},
		{29 * time.Hour, true},
		{31 * time.Hour, true},
	}
	for _, tt := range tests {
		if got := id.NeedsRenewal(start.Add(tt.at)); got != tt.want {
			t.Errorf("NeedsRenewal(start%+v) = %v; want %v", tt.at, got, tt.want)
		}
	}
}
