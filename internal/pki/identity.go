package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dockfleet/dockfleet/internal/datadir"
)

const (
	nodeKeyFile  = "node.key"
	nodeCertFile = "node.crt"
)

// Identity is an enrolled agent's credentials: its key and certificate, the
// node ID the certificate names, and the CA it trusts the server by. Get one
// from SaveIdentity or LoadIdentity; the zero value is not usable.
type Identity struct {
	NodeID string
	// Certificate holds the key and the leaf, ready for tls.Config.
	Certificate tls.Certificate
	Leaf        *x509.Certificate
	CAPool      *x509.CertPool
	NotAfter    time.Time
}

// RenewAt is when two thirds of the certificate's lifetime have passed,
// leaving the last third to renew in while the server may be away for a
// while. The lifetime counts from issue, not from the backdated NotBefore,
// so that short-lived certificates renew in time too.
func (id *Identity) RenewAt() time.Time {
	issued := id.Leaf.NotBefore
	if id.Leaf.NotAfter.Sub(issued) > backdate {
		issued = issued.Add(backdate)
	}
	return issued.Add(id.Leaf.NotAfter.Sub(issued) / 3 * 2)
}

// NeedsRenewal reports whether now is at or past RenewAt.
func (id *Identity) NeedsRenewal(now time.Time) bool {
	return !now.Before(id.RenewAt())
}

// SaveIdentity checks that key, certPEM (the node certificate) and caPEM
// (the CA that signed it) belong together and stores them in dir: node.key
// with mode 0600, node.crt and ca.crt. It returns the identity they make.
//
// Each file is replaced atomically and node.crt comes last, so a crash
// midway through a first enrollment leaves no node.crt, which LoadIdentity
// reports as ErrNoIdentity. A renewal that keeps the key changes node.crt
// only and so is atomic as a whole; one that changes the key can leave a
// new key with the old certificate, which LoadIdentity reports as
// ErrKeyMismatch.
func SaveIdentity(dir string, key crypto.Signer, certPEM, caPEM []byte) (*Identity, error) {
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("storing identity in %s: %w", dir, err)
	}
	id, err := parseIdentity(keyPEM, certPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("storing identity in %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storing identity in %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
		perm fs.FileMode
	}{
		{CACertFile, caPEM, 0o600},
		{nodeKeyFile, keyPEM, 0o600},
		{nodeCertFile, certPEM, 0o600},
	}
	for _, f := range files {
		if err := datadir.WriteFile(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return nil, fmt.Errorf("storing identity in %s: %w", dir, err)
		}
	}
	return id, nil
}

// LoadIdentity reads the identity SaveIdentity stored in dir. It returns an
// error wrapping ErrNoIdentity when there is no node.crt, and other errors
// when the files are there but unusable.
func LoadIdentity(dir string) (*Identity, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, nodeCertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoIdentity, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("loading identity: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, nodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading identity: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("loading identity: %w", err)
	}
	id, err := parseIdentity(keyPEM, certPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("loading identity from %s: %w", dir, err)
	}
	return id, nil
}

func parseIdentity(keyPEM, certPEM, caPEM []byte) (*Identity, error) {
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", nodeKeyFile, err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", nodeCertFile, err)
	}
	leaf := certs[0]
	cas, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", CACertFile, err)
	}
	if err := checkKeyMatches(key, leaf); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", nodeKeyFile, nodeCertFile, err)
	}
	// Signature only: validity is the TLS handshake's business, and an
	// expired identity must still load so that the agent can say why it
	// has to enroll again.
	if err := leaf.CheckSignatureFrom(cas[0]); err != nil {
		return nil, fmt.Errorf("%s and %s: %w: %w", nodeCertFile, CACertFile, ErrNotSignedByCA, err)
	}
	nodeID, err := NodeID(leaf)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", nodeCertFile, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cas[0])
	return &Identity{
		NodeID: nodeID,
		Certificate: tls.Certificate{
			Certificate: [][]byte{leaf.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		Leaf:     leaf,
		CAPool:   pool,
		NotAfter: leaf.NotAfter,
	}, nil
}
