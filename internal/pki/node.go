package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// A node certificate names its node in a URI SAN, dockfleet://node/<id>. The
// URI is what NodeID reads; the CommonName repeats the ID for people reading
// the certificate with openssl.
const (
	nodeURIScheme = "dockfleet"
	nodeURIHost   = "node"
	maxNodeIDLen  = 128
)

// NewNodeKey generates an agent's private key, ECDSA P-256.
func NewNodeKey() (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating node key: %w", err)
	}
	return key, nil
}

// NewCSR returns a DER certificate signing request for key. Its subject is
// empty: the server decides what the certificate names.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate signing request: %w", err)
	}
	return der, nil
}

// SignNode issues the client certificate of node nodeID, in its enrollment
// epoch, for the key in the DER CSR csrDER, valid for ttl (capped at the
// CA's expiry), and returns it in PEM form. The CSR must be signed by its own key; everything else it asks
// for is ignored. The certificate names the node in its CommonName and in a
// dockfleet://node/<id> URI, and is good for client authentication only, so
// that a node's key can never pass for the server's.
func (ca *CA) SignNode(csrDER []byte, nodeID string, epoch int64, ttl time.Duration) (certPEM []byte, err error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, err
	}
	if epoch < 0 {
		return nil, fmt.Errorf("%w: epoch %d is negative", ErrInvalidNodeID, epoch)
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: nodeID},
		URIs:                  []*url.URL{nodeURI(nodeID, epoch)},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	cert, err := ca.issue(tmpl, csr.PublicKey, ttl)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate of node %s: %w", nodeID, err)
	}
	return encodePEM(pemCertificate, cert.Raw), nil
}

// KeyID identifies the public key of csr: the hex SHA-256 of its
// SubjectPublicKeyInfo. A node's store record keeps the one it enrolled
// with, so that a retried enrollment (the same key) is known as one.
func KeyID(csr *x509.CertificateRequest) string {
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// CheckCSR parses the DER CSR csrDER and checks what SignNode would: that
// it is signed by its own key and that the key is of a type SignNode
// accepts. Callers check before they record anything, so that a CSR that
// cannot be signed changes nothing. Errors wrap ErrBadCSR.
func CheckCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := checkNodeKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

// checkNodeKey accepts the key types TLS 1.3 can authenticate a client
// with, and refuses weak ones.
func checkNodeKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s; want P-256, P-384 or P-521", ErrBadCSR, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%w: key type %T; want ECDSA or Ed25519", ErrBadCSR, pub)
	}
}

// checkNodeID accepts IDs that go into a URI path unescaped and cannot be
// mistaken for a path step: a letter or digit, then letters, digits, '.',
// '_' and '-'.
func checkNodeID(id string) error {
	if id == "" || len(id) > maxNodeIDLen {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrInvalidNodeID, id, maxNodeIDLen)
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._-", r)) {
			return fmt.Errorf("%w: %q: want a letter or digit, then letters, digits, '.', '_' or '-'", ErrInvalidNodeID, id)
		}
	}
	return nil
}

// nodeURI is the URI SAN of node nodeID's certificates in epoch. The epoch
// counts the node's re-enrollments (an operator's recovery of a node whose
// certificate was lost or expired); the server refuses the certificates of
// an earlier epoch. The first epoch, 0, is left out, as in the certificates
// made before epochs existed.
func nodeURI(nodeID string, epoch int64) *url.URL {
	u := &url.URL{Scheme: nodeURIScheme, Host: nodeURIHost, Path: "/" + nodeID}
	if epoch > 0 {
		u.RawQuery = url.Values{"epoch": {strconv.FormatInt(epoch, 10)}}.Encode()
	}
	return u
}

// NodeEpoch returns the enrollment epoch of the node certificate cert; 0 when
// it names none. Like NodeID it does not verify cert.
func NodeEpoch(cert *x509.Certificate) (int64, error) {
	for _, u := range cert.URIs {
		if u.Scheme != nodeURIScheme || u.Host != nodeURIHost {
			continue
		}
		e := u.Query().Get("epoch")
		if e == "" {
			return 0, nil
		}
		epoch, err := strconv.ParseInt(e, 10, 64)
		if err != nil || epoch < 0 {
			return 0, fmt.Errorf("%w: epoch %q is not a whole number", ErrNoNodeID, e)
		}
		return epoch, nil
	}
	return 0, ErrNoNodeID
}

// NodeID returns the ID of the node cert names. It does not verify cert:
// callers pass a certificate TLS has verified (see PeerNode) or one they
// just loaded and checked.
func NodeID(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		if u.Scheme != nodeURIScheme || u.Host != nodeURIHost {
			continue
		}
		id := strings.TrimPrefix(u.Path, "/")
		if err := checkNodeID(id); err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoNodeID, err)
		}
		return id, nil
	}
	return "", ErrNoNodeID
}

// PeerNode returns the node ID and enrollment epoch of the client on a
// connection the agent endpoint accepted (AgentServerTLS). It reads the
// verified chain only, and returns ErrNoClientCert when the client sent no
// certificate, as an enrolling agent does: every handler but enrollment must
// refuse that.
func PeerNode(cs tls.ConnectionState) (id string, epoch int64, err error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", 0, ErrNoClientCert
	}
	leaf := cs.VerifiedChains[0][0]
	if id, err = NodeID(leaf); err != nil {
		return "", 0, err
	}
	if epoch, err = NodeEpoch(leaf); err != nil {
		return "", 0, err
	}
	return id, epoch, nil
}
