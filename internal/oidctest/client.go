package oidctest

import (
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// RedirectURI is the client's redirect URI for browser logins. As the
// client is native, op takes it on any port of the loopback address
// (RFC 8252 §7.3): a CLI listens on a port it picks.
const RedirectURI = "http://127.0.0.1/callback"

// client is the provider's one client (op.Client): public and native (the
// CLI's) without a secret, confidential with one.
type client struct {
	id, secret string
}

func (c client) GetID() string                    { return c.id }
func (c client) RedirectURIs() []string           { return []string{RedirectURI} }
func (c client) PostLogoutRedirectURIs() []string { return nil }

func (c client) ApplicationType() op.ApplicationType {
	if c.secret != "" {
		return op.ApplicationTypeWeb
	}
	return op.ApplicationTypeNative
}

func (c client) AuthMethod() oidc.AuthMethod {
	if c.secret != "" {
		return oidc.AuthMethodBasic
	}
	return oidc.AuthMethodNone
}

func (c client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeDeviceCode}
}

// LoginURL is the provider's login page, relative to the issuer.
func (c client) LoginURL(authRequestID string) string {
	return loginPath + "?authRequestID=" + authRequestID
}

func (c client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c client) IDTokenLifetime() time.Duration      { return IDTokenLifetime }
func (c client) DevMode() bool                       { return false }
func (c client) ClockSkew() time.Duration            { return 0 }

func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}

func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}

// IsScopeAllowed allows the groups scope besides OpenID Connect's.
func (c client) IsScopeAllowed(scope string) bool { return scope == GroupsScope }

// IDTokenUserinfoClaimsAssertion puts the profile and email claims in the
// ID token, as most providers do, and not only behind the userinfo
// endpoint.
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }
