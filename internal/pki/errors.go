package pki

import "errors"

// Errors callers can test for with errors.Is. Most are wrapped with detail
// that says what is wrong and where.
var (
	// ErrCAIncomplete is returned when the data dir holds one of ca.crt and
	// ca.key but not the other.
	ErrCAIncomplete = errors.New("pki: CA is incomplete")
	// ErrCAExpired is returned when the stored CA certificate has expired.
	ErrCAExpired = errors.New("pki: CA certificate has expired")
	// ErrNotCA is returned when a certificate loaded as a CA is not one.
	ErrNotCA = errors.New("pki: certificate is not a CA")
	// ErrKeyMismatch is returned when a private key does not belong to the
	// certificate stored with it.
	ErrKeyMismatch = errors.New("pki: private key does not match certificate")
	// ErrNotSignedByCA is returned when a certificate was not issued by the
	// CA it is stored or presented with.
	ErrNotSignedByCA = errors.New("pki: certificate is not signed by the CA")
	// ErrInvalidPEM is returned when a file or buffer holds no usable PEM
	// block of the expected type.
	ErrInvalidPEM = errors.New("pki: invalid PEM data")
	// ErrInvalidHost is returned for a server host that is neither a DNS
	// name nor an IP address.
	ErrInvalidHost = errors.New("pki: invalid host")
	// ErrInvalidTTL is returned for a certificate lifetime that is not
	// positive.
	ErrInvalidTTL = errors.New("pki: invalid certificate lifetime")
	// ErrInvalidNodeID is returned for a node ID that cannot be put in a
	// certificate.
	ErrInvalidNodeID = errors.New("pki: invalid node ID")
	// ErrBadCSR is returned for a certificate signing request that does not
	// parse, is not signed by its own key, or has a key type nodes may not use.
	ErrBadCSR = errors.New("pki: bad certificate signing request")
	// ErrNoNodeID is returned when a certificate names no node.
	ErrNoNodeID = errors.New("pki: certificate names no node")
	// ErrNoClientCert is returned when a connection carries no verified
	// client certificate.
	ErrNoClientCert = errors.New("pki: no verified client certificate")
	// ErrNoIdentity is returned by LoadIdentity when the agent's data dir
	// holds no identity yet, so the agent has to enroll.
	ErrNoIdentity = errors.New("pki: no node identity")
	// ErrFingerprintMismatch is returned during enrollment when the server's
	// CA is not the one the enrollment token names.
	ErrFingerprintMismatch = errors.New("pki: server CA fingerprint does not match the enrollment token")
	// ErrNoServerName is returned when a server certificate is to be verified
	// but no server name was given to verify it for.
	ErrNoServerName = errors.New("pki: no server name to verify the server certificate for")
	// ErrBadEnrollToken is returned by ParseEnrollToken.
	ErrBadEnrollToken = errors.New("pki: not a dockfleet enrollment token")
	// ErrBadAPIToken is returned by ParseAPIToken.
	ErrBadAPIToken = errors.New("pki: not a dockfleet API token")
	// ErrRotating is returned by Roots.Rotate while a rotation runs.
	ErrRotating = errors.New("pki: a CA rotation is in progress")
	// ErrNotRotating is returned by Roots.Finish when no rotation runs.
	ErrNotRotating = errors.New("pki: no CA rotation is in progress")
)
