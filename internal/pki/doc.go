// Package pki is dockfleet's built-in certificate authority and everything
// that rests on it: the CA the server creates on first start (and keeps
// sealed in its store, as Roots.MarshalPEM gives it), the server
// certificate of its REST API and agent endpoint, the client certificates
// that name enrolled nodes, the agent's stored identity, the enrollment and
// API token formats, and the TLS configuration of every listener and client.
//
// Trust is bootstrapped the way Docker Swarm does it: an enrollment token
// carries the SHA-256 fingerprint of the CA certificate, so an agent that has
// no file yet can still verify the server (EnrollClientTLS) and never trusts
// it blindly. The agent sends a CSR with the token; the server names the node
// in the certificate it signs (SignNode), and from then on every agent
// connection is mutual TLS 1.3 and the node ID comes from the verified client
// certificate (PeerNode), never from what the agent says.
//
// The CA's roots can be replaced while every agent stays connected (Roots,
// Authority; roots.go says how a rotation runs), and an agent renews its
// certificate at a point drawn from the certificate between half and four
// fifths of its life (Identity.RenewAt), presenting the new one on the
// connections it makes afterwards (RenewingClientTLS).
//
// Only the standard library's crypto is used. Keys are ECDSA P-256, which
// every TLS stack supports.
package pki
