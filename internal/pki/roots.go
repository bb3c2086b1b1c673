package pki

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// A CA rotation replaces the root every certificate chains to without
// cutting any node off. It runs in two steps, the order Kubernetes' manual
// rotation follows: every party trusts the new root before anything is
// issued by it that a party must verify.
//
//  1. Rotate: a new root becomes active and signs the node certificates
//     from then on. The old root is retiring: the agent endpoint still
//     accepts client certificates of it, and it still issues the server
//     certificates, so that an agent that has not heard of the new root yet
//     (one that was switched off) still trusts the server, connects, and
//     learns of it. Agents are given both roots, newest first, and renew.
//  2. Finish: once every node holds a certificate of the active root (and
//     so trusts it: the roots come with the certificate), the retiring root
//     is retired. Nothing of it is trusted any more, its key is dropped, and
//     the server certificates are issued by the active root.

// RootState is where a root stands in the fleet's trust.
type RootState string

// The states of a root.
const (
	// RootActive signs node certificates; it is trusted. There is one.
	RootActive RootState = "active"
	// RootRetiring is the root a rotation replaces: trusted, and the
	// issuer of the server certificates until the rotation finishes.
	RootRetiring RootState = "retiring"
	// RootRetired is trusted no more. Only its certificate is kept, to
	// recognise the data dirs and agents that still hold it.
	RootRetired RootState = "retired"
)

// rootHeader is the PEM header that says a root's state in MarshalPEM's
// output.
const rootHeader = "Dockfleet-Root"

// Roots are the fleet's CA roots at one point of their life: the active
// root, the retiring one while a rotation runs, and those retired before.
// A Roots never changes: Rotate and Finish return new ones. The zero value
// is not usable; get one from NewRoots or ParseRoots.
type Roots struct {
	active   *CA
	retiring *CA // nil unless a rotation runs
	retired  []*x509.Certificate
	pool     *x509.CertPool // active and retiring
	bundle   []byte         // their certificates in PEM, active first
}

// NewRoots returns the roots of a fleet whose only root is ca.
func NewRoots(ca *CA) *Roots { return newRoots(ca, nil, nil) }

func newRoots(active, retiring *CA, retired []*x509.Certificate) *Roots {
	r := &Roots{active: active, retiring: retiring, retired: retired, pool: x509.NewCertPool()}
	for _, ca := range r.trusted() {
		r.pool.AddCert(ca.cert)
		r.bundle = append(r.bundle, ca.certPEM...)
	}
	return r
}

// trusted are the roots whose certificates are accepted, newest first.
func (r *Roots) trusted() []*CA {
	if r.retiring == nil {
		return []*CA{r.active}
	}
	return []*CA{r.active, r.retiring}
}

// Active is the root that signs node certificates.
func (r *Roots) Active() *CA { return r.active }

// Serving is the root that issues the server certificates: the retiring
// root while a rotation runs, so that agents that know only it still trust
// the server, and the active root otherwise.
func (r *Roots) Serving() *CA {
	if r.retiring != nil {
		return r.retiring
	}
	return r.active
}

// Rotating reports whether a rotation runs: there is a retiring root.
func (r *Roots) Rotating() bool { return r.retiring != nil }

// Pool returns a new pool of the trusted roots: the active and the
// retiring one.
func (r *Roots) Pool() *x509.CertPool { return r.pool.Clone() }

// BundlePEM returns the trusted roots' certificates in PEM, the active
// root first: what agents store as ca.crt, and what a client's --ca-cert
// should hold during a rotation.
func (r *Roots) BundlePEM() []byte { return slices.Clone(r.bundle) }

// Trusts reports whether the root whose fingerprint is fp is trusted:
// active or retiring.
func (r *Roots) Trusts(fp string) bool {
	return slices.ContainsFunc(r.trusted(), func(ca *CA) bool { return ca.fingerprint == fp })
}

// Knows reports whether fp is the fingerprint of one of the roots, retired
// ones included.
func (r *Roots) Knows(fp string) bool {
	return r.Trusts(fp) || slices.ContainsFunc(r.retired, func(c *x509.Certificate) bool { return fingerprint(c.Raw) == fp })
}

// RootInfo describes one root.
type RootInfo struct {
	Fingerprint string
	State       RootState
	// Serving says the root issues the server certificates.
	Serving   bool
	NotBefore time.Time
	NotAfter  time.Time
}

// List describes the roots: active, retiring, then the retired ones from
// the most recently retired.
func (r *Roots) List() []RootInfo {
	info := func(c *x509.Certificate, state RootState) RootInfo {
		fp := fingerprint(c.Raw)
		return RootInfo{Fingerprint: fp, State: state, Serving: fp == r.Serving().fingerprint, NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	}
	out := []RootInfo{info(r.active.cert, RootActive)}
	if r.retiring != nil {
		out = append(out, info(r.retiring.cert, RootRetiring))
	}
	for _, c := range slices.Backward(r.retired) {
		out = append(out, info(c, RootRetired))
	}
	return out
}

// Rotate starts a rotation: a new root, an ECDSA P-256 key and a
// self-signed certificate valid for ten years, becomes active, and r's
// active root retiring. It returns ErrRotating if a rotation runs already.
func (r *Roots) Rotate() (*Roots, error) {
	if r.retiring != nil {
		return nil, fmt.Errorf("%w: root %s is retiring still", ErrRotating, r.retiring.fingerprint)
	}
	ca, err := newCA(r.active.now())
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	return newRoots(ca, r.active, r.retired), nil
}

// Finish ends a rotation: the retiring root is retired. It returns
// ErrNotRotating if no rotation runs.
func (r *Roots) Finish() (*Roots, error) {
	if r.retiring == nil {
		return nil, ErrNotRotating
	}
	return newRoots(r.active, nil, append(slices.Clone(r.retired), r.retiring.cert)), nil
}

// MarshalPEM returns the roots whole, as ParseRoots reads them: the active
// root's certificate and key, the retiring root's, then the retired roots'
// certificates, each block with a Dockfleet-Root header naming its root's
// state. It is secret. Read by ParseCA (a server from before rotations),
// it is the active root.
func (r *Roots) MarshalPEM() ([]byte, error) {
	var out []byte
	for i, ca := range r.trusted() {
		state := RootActive
		if i > 0 {
			state = RootRetiring
		}
		der, err := x509.MarshalPKCS8PrivateKey(ca.key)
		if err != nil {
			return nil, fmt.Errorf("encoding private key: %w", err)
		}
		h := map[string]string{rootHeader: string(state)}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Headers: h, Bytes: ca.cert.Raw})...)
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Headers: h, Bytes: der})...)
	}
	for _, c := range r.retired {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Headers: map[string]string{rootHeader: string(RootRetired)}, Bytes: c.Raw})...)
	}
	return out, nil
}

// ParseRoots reads roots as MarshalPEM writes them, or a CA as
// CA.MarshalPEM writes it (a store from before rotations), which becomes
// the active root. Like ParseCA it refuses a key that does not match its
// certificate, a certificate that is not a CA, and an expired active root;
// where names the data's origin in errors.
func ParseRoots(where string, data []byte) (*Roots, error) {
	type entry struct {
		state           RootState
		certPEM, keyPEM []byte
	}
	var entries []*entry
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemCertificate:
			state := RootState(block.Headers[rootHeader])
			if state == "" && len(entries) == 0 {
				state = RootActive // CA.MarshalPEM's
			}
			entries = append(entries, &entry{state: state, certPEM: encodePEM(pemCertificate, block.Bytes)})
		case pemPrivateKey:
			if len(entries) == 0 {
				return nil, fmt.Errorf("reading CA roots from %s: %w: a key before any certificate", where, ErrInvalidPEM)
			}
			if e := entries[len(entries)-1]; e.keyPEM == nil {
				e.keyPEM = encodePEM(pemPrivateKey, block.Bytes)
			}
		}
	}
	var (
		active, retiring *CA
		retired          []*x509.Certificate
	)
	for i, e := range entries {
		switch e.state {
		case RootActive, RootRetiring:
			if e.keyPEM == nil {
				return nil, fmt.Errorf("reading CA roots from %s: %w: the %s root (certificate %d) has no key", where, ErrInvalidPEM, e.state, i+1)
			}
			ca, err := parseCA(e.certPEM, e.keyPEM)
			if err != nil {
				return nil, fmt.Errorf("reading CA roots from %s: the %s root: %w", where, e.state, err)
			}
			slot := &active
			if e.state == RootRetiring {
				slot = &retiring
			}
			if *slot != nil {
				return nil, fmt.Errorf("reading CA roots from %s: %w: two %s roots", where, ErrInvalidPEM, e.state)
			}
			*slot = ca
		case RootRetired:
			certs, err := parseCertsPEM(e.certPEM)
			if err != nil {
				return nil, fmt.Errorf("reading CA roots from %s: a retired root: %w", where, err)
			}
			retired = append(retired, certs[0])
		default:
			return nil, fmt.Errorf("reading CA roots from %s: %w: certificate %d has %s %q; want %s, %s or %s",
				where, ErrInvalidPEM, i+1, rootHeader, e.state, RootActive, RootRetiring, RootRetired)
		}
	}
	if active == nil {
		return nil, fmt.Errorf("reading CA roots from %s: %w: no active root", where, ErrInvalidPEM)
	}
	if err := active.checkExpiry(where); err != nil {
		return nil, err
	}
	return newRoots(active, retiring, retired), nil
}

// Authority holds the fleet's roots as they change over a rotation, for
// the listeners and services that use them: Set replaces them for the
// handshakes and calls that follow. It is safe for concurrent use.
type Authority struct {
	p atomic.Pointer[Roots]
}

// NewAuthority returns an Authority holding r.
func NewAuthority(r *Roots) *Authority {
	a := &Authority{}
	a.Set(r)
	return a
}

// Roots returns the roots now.
func (a *Authority) Roots() *Roots { return a.p.Load() }

// Set makes r the roots from now on.
func (a *Authority) Set(r *Roots) { a.p.Store(r) }
