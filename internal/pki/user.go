package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// A user's client certificate, for the REST API, names the user in a URI
// SAN, dockfleet://user/<name>: an API client may present it instead of a
// bearer token. A node's certificate (dockfleet://node/...) names no user
// and authenticates no API request.
const userURIHost = "user"

// ErrNoUser is what PeerUser returns for a certificate that names no user.
var ErrNoUser = errors.New("pki: the client certificate names no dockfleet user")

// SignUser issues the API client certificate of user for the key in the
// DER CSR csrDER, valid for ttl (capped at the CA's expiry), in PEM form.
// As with SignNode, the CSR proves its key and asks for nothing else, and
// the certificate is good for client authentication only.
func (ca *CA) SignUser(csrDER []byte, user string, ttl time.Duration) (certPEM []byte, err error) {
	if user == "" || strings.ContainsAny(user, "/?#") {
		return nil, fmt.Errorf("pki: user name %q cannot go into a certificate", user)
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: user},
		URIs:                  []*url.URL{{Scheme: nodeURIScheme, Host: userURIHost, Path: "/" + user}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	cert, err := ca.issue(tmpl, csr.PublicKey, ttl)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate of user %s: %w", user, err)
	}
	return encodePEM(pemCertificate, cert.Raw), nil
}

// PeerUser returns the user the client certificate of a connection names,
// from its verified chain only (APIServerTLS verified it against the CA).
// ErrNoClientCert: the client sent none; ErrNoUser: it names no user.
func PeerUser(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrNoClientCert
	}
	for _, u := range cs.VerifiedChains[0][0].URIs {
		if u.Scheme == nodeURIScheme && u.Host == userURIHost {
			if name := strings.TrimPrefix(u.Path, "/"); name != "" {
				return name, nil
			}
		}
	}
	return "", ErrNoUser
}

// NewUserKey makes the key of a user's client certificate, ECDSA P-256,
// and returns it in PEM form with the DER request to sign it (SignUser).
func NewUserKey() (keyPEM, csrDER []byte, err error) {
	key, err := NewNodeKey()
	if err != nil {
		return nil, nil, err
	}
	if csrDER, err = NewCSR(key); err != nil {
		return nil, nil, err
	}
	keyPEM, err = marshalKeyPEM(key)
	return keyPEM, csrDER, err
}
