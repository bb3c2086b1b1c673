package api

import "time"

// CA is the fleet's certificate authority, as GET /v1/ca shows it and
// POST /v1/ca/rotate and POST /v1/ca/finish leave it.
type CA struct {
	// Roots are the CA roots: the active one, the retiring one while a
	// rotation runs, then those retired before.
	Roots []CARoot `json:"roots"`
	// Rotating says a rotation runs; it can finish once Pending is 0.
	Rotating bool `json:"rotating"`
	// TokenFingerprint is the CA fingerprint new enrollment tokens carry:
	// the serving root's.
	TokenFingerprint string `json:"tokenFingerprint"`
	// Nodes counts the nodes that are not revoked. Pending counts those of
	// them whose newest certificate is not of the active root, and
	// PendingNodes names up to 50 of them; Unknown counts those whose
	// newest certificate was issued before the server recorded issuers
	// (they count as pending).
	Nodes        int      `json:"nodes"`
	Pending      int      `json:"pending"`
	PendingNodes []string `json:"pendingNodes"`
	Unknown      int      `json:"unknown"`
	// Bundle is the trusted roots' certificates in PEM, the active root
	// first: what the CLI's --ca-cert must hold once the rotation finishes
	// (the server's DATA_DIR/ca.crt holds it too).
	Bundle string `json:"bundle"`
}

// CARoot is one CA root.
type CARoot struct {
	// Fingerprint is the lowercase hex SHA-256 of the root's certificate.
	Fingerprint string `json:"fingerprint"`
	// State is active (it signs node certificates), retiring (trusted
	// while a rotation runs) or retired (trusted no more).
	State string `json:"state"`
	// Serving says the root issues the server certificates: the retiring
	// root while a rotation runs, the active one otherwise.
	Serving   bool      `json:"serving"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// Nodes counts the nodes whose newest certificate the root issued.
	Nodes int `json:"nodes"`
}
