package api

import (
	"time"

	"github.com/dockfleet/dockfleet/internal/spec"
)

// User is a person who logs in: locally, with a password, or through the
// identity provider (SSO), where the provider holds the password.
type User struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled,omitempty"`
	// SSO marks a user first seen at an SSO login; it has no password here.
	SSO       bool      `json:"sso,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	Version   int64     `json:"version"`
}

// UserRequest creates a user (POST /v1/users).
type UserRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// UserPatch changes a user (PATCH /v1/users/{name}): a new password, or
// disabled or enabled; nil fields stay.
type UserPatch struct {
	Password *string `json:"password,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// LoginRequest logs a user in with a password (POST /v1/login).
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// SSOLoginRequest logs a user in with an ID token of the identity provider
// (POST /v1/login/sso).
type SSOLoginRequest struct {
	IDToken string `json:"idToken"`
}

// Login is the answer to a login: a session token, shown once.
type Login struct {
	User      string    `json:"user"`
	Token     string    `json:"token"`
	TokenID   string    `json:"tokenId"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// AuthInfo is what GET /v1/auth tells clients before they log in: how.
type AuthInfo struct {
	// SSO is set when the server accepts logins from an identity provider.
	SSO *SSOInfo `json:"sso,omitempty"`
}

// SSOInfo is the identity provider a client logs in with.
type SSOInfo struct {
	Issuer   string `json:"issuer"`
	ClientID string `json:"clientId"`
}

// Whoami is GET /v1/whoami: the caller and what it may do where.
type Whoami struct {
	// Kind is "user" or "token".
	Kind    string  `json:"kind"`
	Name    string  `json:"name"`
	User    string  `json:"user,omitempty"`
	TokenID string  `json:"tokenId,omitempty"`
	Grants  []Grant `json:"grants"`
}

// Grant is a role held in a project ("*": every project).
type Grant struct {
	Role        string   `json:"role"`
	Project     string   `json:"project"`
	Permissions []string `json:"permissions"`
}

// Token kinds.
const (
	// TokenAPI is an API token made for automation.
	TokenAPI = "api"
	// TokenSession is a user's login session.
	TokenSession = "session"
	// TokenBootstrap is the admin token the first start wrote to the data dir.
	TokenBootstrap = "bootstrap"
	// TokenCertificate is no token: a request authenticated by a user's
	// client certificate (mutual TLS) instead.
	TokenCertificate = "certificate"
)

// UserCertificateRequest asks for an API client certificate of the caller
// (POST /v1/whoami/certificate): the DER certificate signing request of a
// key the client made, base64 in JSON.
type UserCertificateRequest struct {
	CSR []byte `json:"csr"`
	// TTL is a duration (720h); default 30 days, at most 90.
	TTL string `json:"ttl,omitempty"`
}

// UserCertificate is the certificate issued, PEM, with the CA roots to
// trust the server by.
type UserCertificate struct {
	Certificate string    `json:"certificate"`
	ExpiresAt   time.Time `json:"expiresAt"`
}

// APIToken is a bearer credential: an API token for automation, bound to
// one role in one project (or all), or a user's login session, which acts
// as the user. Its secret is shown once, at creation; the store keeps only
// a hash.
type APIToken struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Owner is the user who made it (or logged in); "" for the bootstrap token.
	Owner string `json:"owner,omitempty"`
	// Role and Project are an API token's binding; a session has none.
	Role    string `json:"role,omitempty"`
	Project string `json:"project,omitempty"`
	// Groups are a session's groups, from the identity provider.
	Groups    []string  `json:"groups,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt zero means the token never expires (the bootstrap token).
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// Token is set only in the answer to a create.
	Token string `json:"token,omitempty"`
}

// APITokenRequest makes an API token (POST /v1/apitokens).
type APITokenRequest struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Project string `json:"project"`
	// TTL is a duration (720h); default 30 days.
	TTL string `json:"ttl,omitempty"`
}

// Role is a named set of permissions ("resource:verb").
type Role struct {
	Name        string    `json:"name"`
	Permissions []string  `json:"permissions"`
	Builtin     bool      `json:"builtin,omitempty"`
	CreatedAt   time.Time `json:"createdAt,omitzero"`
}

// Binding gives a subject ("user:NAME" or "group:NAME") a role in one
// project, or in every project ("*").
type Binding struct {
	ID        string    `json:"id"`
	Subject   string    `json:"subject"`
	Role      string    `json:"role"`
	Project   string    `json:"project"`
	CreatedAt time.Time `json:"createdAt"`
}

// Project is a tenant: its deployments, rollouts and events are visible
// only to those bound to it, and its deployments may select only the nodes
// its node selector allows.
type Project struct {
	Name         string        `json:"name"`
	NodeSelector spec.Selector `json:"nodeSelector"`
	CreatedAt    time.Time     `json:"createdAt"`
}

// AuditRecord is one entry of the audit log: who did what, to what, from
// where, and how it ended. Each holds the hash of the one before, so an
// edited or deleted record shows (dockfleet audit verify).
type AuditRecord struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Actor is who: "user:alice", "token:ID (owner)", or for a failed
	// login the name it gave.
	Actor   string `json:"actor"`
	Action  string `json:"action"`
	Target  string `json:"target,omitempty"`
	Project string `json:"project,omitempty"`
	Source  string `json:"source"`
	// Result is "ok" for a change that was made, else what refused it.
	Result    string `json:"result"`
	RequestID string `json:"requestId"`
	PrevHash  string `json:"prevHash"`
	Hash      string `json:"hash"`
}

// AuditVerify is the answer to GET /v1/audit/verify.
type AuditVerify struct {
	Records  int64    `json:"records"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`
}
