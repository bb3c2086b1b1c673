package pki

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dockfleet/dockfleet/internal/datadir"
)

const (
	nodeKeyFile  = "node.key"
	nodeCertFile = "node.crt"
)

// Identity is an enrolled agent's credentials: its key and certificate, the
// node ID the certificate names, and the CA roots it trusts the server by.
// Get one from SaveIdentity, SaveRoots or LoadIdentity; the zero value is
// not usable.
type Identity struct {
	NodeID string
	// Certificate holds the key and the leaf, ready for tls.Config.
	Certificate tls.Certificate
	Leaf        *x509.Certificate
	// CAs are the roots of ca.crt, newest first: one, or two while a CA
	// rotation runs. CAPool holds them all.
	CAs      []*x509.Certificate
	CAPool   *x509.CertPool
	NotAfter time.Time
}

// A node certificate is renewed at a point between renewFrom and renewBy
// of its lifetime: past half, so that a certificate is not renewed for
// nothing, and with a fifth left to renew in while the server may be away
// for a while.
const (
	renewFrom = 0.5
	renewBy   = 0.8
)

// RenewAt is when the certificate is due for renewal: a point between half
// and four fifths of its lifetime, drawn from the certificate itself (its
// hash), so that it is the same whenever it is asked of one certificate (an
// agent restarted now and then does not draw again, each time earlier)
// while the nodes of a fleet enrolled together spread their renewals over
// that span. The lifetime counts from issue, not from the backdated
// NotBefore, so that short-lived certificates renew in time too.
func (id *Identity) RenewAt() time.Time {
	issued := id.Leaf.NotBefore
	if id.Leaf.NotAfter.Sub(issued) > backdate {
		issued = issued.Add(backdate)
	}
	life := id.Leaf.NotAfter.Sub(issued)
	return issued.Add(time.Duration(float64(life) * renewPoint(id.Leaf.Raw)))
}

// renewPoint is the fraction of its lifetime at which the certificate der
// renews, in [renewFrom, renewBy): taken from its SHA-256, which is as good
// as random across certificates (each has its own key and serial number)
// and fixed for one.
func renewPoint(der []byte) float64 {
	sum := sha256.Sum256(der)
	u := float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53) // [0, 1)
	return renewFrom + (renewBy-renewFrom)*u
}

// NeedsRenewal reports whether now is at or past RenewAt.
func (id *Identity) NeedsRenewal(now time.Time) bool {
	return !now.Before(id.RenewAt())
}

// FromNewestRoot reports whether the certificate was issued by the newest
// root the agent trusts (CAs[0]). During a CA rotation it is not, until the
// node has renewed it.
func (id *Identity) FromNewestRoot() bool {
	return signedBy(id.Leaf, id.CAs[0])
}

// SameRoots reports whether caPEM holds the roots the agent trusts, in
// the same order.
func (id *Identity) SameRoots(caPEM []byte) bool {
	cas, err := parseCertsPEM(caPEM)
	return err == nil && slices.EqualFunc(cas, id.CAs, func(a, b *x509.Certificate) bool { return a.Equal(b) })
}

// signedBy reports whether root issued leaf.
func signedBy(leaf, root *x509.Certificate) bool {
	return bytes.Equal(leaf.RawIssuer, root.RawSubject) && leaf.CheckSignatureFrom(root) == nil
}

// SaveIdentity checks that key, certPEM (the node certificate) and caPEM
// (the CA roots, newest first, one of which signed it) belong together and
// stores them in dir: node.key with mode 0600, node.crt and ca.crt. It
// returns the identity they make.
//
// Each file is replaced atomically and node.crt comes last, so a crash
// midway through a first enrollment leaves no node.crt, which LoadIdentity
// reports as ErrNoIdentity. A renewal that keeps the key changes node.crt,
// and ca.crt when the roots changed, which during a rotation still trust the
// old certificate: a crash between the two loses nothing. One that changes
// the key can leave a new key with the old certificate, which LoadIdentity
// reports as ErrKeyMismatch.
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

// SaveRoots stores caPEM, the CA roots the server gives (newest first),
// as the ca.crt of id's data dir dir, and returns id with them. The roots
// must include the one that issued id's certificate: an agent that trusts
// roots none of which vouch for its certificate has to renew it first.
// ca.crt is replaced atomically; nothing else changes.
func SaveRoots(dir string, id *Identity, caPEM []byte) (*Identity, error) {
	cas, err := parseRoots(caPEM)
	if err != nil {
		return nil, fmt.Errorf("storing CA roots in %s: %w", dir, err)
	}
	if !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool { return signedBy(id.Leaf, ca) }) {
		return nil, fmt.Errorf("storing CA roots in %s: %w: none of them issued the node certificate", dir, ErrNotSignedByCA)
	}
	if err := datadir.WriteFile(filepath.Join(dir, CACertFile), caPEM, 0o600); err != nil {
		return nil, fmt.Errorf("storing CA roots in %s: %w", dir, err)
	}
	out := *id
	out.CAs, out.CAPool = cas, certPool(cas)
	return &out, nil
}

// parseRoots reads the CA certificates of an agent's ca.crt: one or more,
// each a CA.
func parseRoots(caPEM []byte) ([]*x509.Certificate, error) {
	cas, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", CACertFile, err)
	}
	for _, ca := range cas {
		if !ca.BasicConstraintsValid || !ca.IsCA {
			return nil, fmt.Errorf("reading %s: %w", CACertFile, ErrNotCA)
		}
	}
	return cas, nil
}

func certPool(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
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
	cas, err := parseRoots(caPEM)
	if err != nil {
		return nil, err
	}
	if err := checkKeyMatches(key, leaf); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", nodeKeyFile, nodeCertFile, err)
	}
	// Signature only: validity is the TLS handshake's business, and an
	// expired identity must still load so that the agent can say why it
	// has to enroll again. Any of the roots will do: during a CA rotation
	// the agent trusts two.
	signed := false
	for _, ca := range cas {
		if leaf.CheckSignatureFrom(ca) == nil {
			signed = true
			break
		}
	}
	if !signed {
		err := leaf.CheckSignatureFrom(cas[0])
		return nil, fmt.Errorf("%s and %s: %w: %w", nodeCertFile, CACertFile, ErrNotSignedByCA, err)
	}
	nodeID, err := NodeID(leaf)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", nodeCertFile, err)
	}
	return &Identity{
		NodeID: nodeID,
		Certificate: tls.Certificate{
			Certificate: [][]byte{leaf.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		Leaf:     leaf,
		CAs:      cas,
		CAPool:   certPool(cas),
		NotAfter: leaf.NotAfter,
	}, nil
}
