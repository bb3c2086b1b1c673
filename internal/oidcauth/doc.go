// Package oidcauth is dockfleet's single sign-on with an OpenID Connect
// identity provider, for teams that have one (--oidc-issuer,
// --oidc-client-id): a Verifier checks the ID tokens the provider signs and
// turns them into an Identity, and DeviceLogin gets such a token for the CLI
// by the device authorization grant (RFC 8628). What an Identity may do is
// not decided here: the API binds claims (its username, its groups) to roles.
//
// A token is trusted only when the issuer's current keys, fetched from its
// discovery document's jwks_uri (github.com/coreos/go-oidc/v3), verify its
// signature, its iss claim is exactly Config.Issuer, its aud claim names
// Config.ClientID and its exp claim is in the future. Every refusal says
// which of these failed and never repeats the token.
//
// The errors map to HTTP statuses in one place, the API's: ErrUnavailable
// (the issuer did not answer) is 503, anything matching ErrInvalidToken is
// 401.
package oidcauth
