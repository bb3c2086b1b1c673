package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// groupsScope is the scope by which many providers (Okta, Keycloak, Dex)
// put the groups claim in ID tokens; it is not part of OpenID Connect.
const groupsScope = "groups"

// DeviceOption changes how DeviceLogin asks.
type DeviceOption func(*deviceLogin)

type deviceLogin struct {
	scopes []string
	secret string
}

// WithScopes sets the scopes DeviceLogin asks for instead of its default
// (see DeviceLogin); openid is added when missing.
func WithScopes(scopes ...string) DeviceOption {
	return func(d *deviceLogin) { d.scopes = slices.Clone(scopes) }
}

// WithClientSecret authenticates a confidential client with its secret
// (HTTP basic authentication). The CLI's client is public: it has none.
func WithClientSecret(secret string) DeviceOption {
	return func(d *deviceLogin) { d.secret = secret }
}

// DeviceLogin logs a user in at issuer by the device authorization grant
// (RFC 8628), the CLI's way: it asks the endpoint the issuer's discovery
// document names (device_authorization_endpoint) for a code, calls show,
// if not nil, once with where the user should go and the code to enter
// there (verificationURIComplete, empty if the provider gives none, carries
// the code in the URL), then polls the token endpoint at the interval the
// provider asks for until the user approves or denies, the code expires or
// ctx ends. It returns the ID token the provider issued to clientID, which
// the server's Verifier then checks.
//
// The scopes are openid, profile and email, and groups when the discovery
// document lists it in scopes_supported (a provider may refuse a scope it
// does not know); WithScopes replaces them. httpClient reaches the issuer;
// nil means a client with a 30 s timeout.
func DeviceLogin(ctx context.Context, issuer, clientID string, httpClient *http.Client,
	show func(verificationURI, verificationURIComplete, userCode string), opts ...DeviceOption) (rawIDToken string, err error) {
	if err := (Config{Issuer: issuer, ClientID: clientID}).Validate(); err != nil {
		return "", err
	}
	var d deviceLogin
	for _, o := range opts {
		o(&d)
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: httpTimeout}
	}
	// oidc.ClientContext sets the client for oauth2 too.
	ctx = oidc.ClientContext(ctx, httpClient)
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		return "", fmt.Errorf("discovery of the identity provider %s: %w", issuer, err)
	}
	var meta struct {
		Scopes []string `json:"scopes_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return "", fmt.Errorf("the discovery document of %s: %w", issuer, err)
	}
	endpoint := provider.Endpoint()
	if endpoint.DeviceAuthURL == "" {
		return "", fmt.Errorf("%w: the discovery document of %s has no device_authorization_endpoint; enable the device code grant for client %q there",
			ErrNoDeviceFlow, issuer, clientID)
	}
	endpoint.AuthStyle = oauth2.AuthStyleInParams // a public client sends its client_id in the form
	if d.secret != "" {
		endpoint.AuthStyle = oauth2.AuthStyleInHeader
	}
	conf := &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: d.secret,
		Endpoint:     endpoint,
		Scopes:       deviceScopes(d.scopes, meta.Scopes),
	}

	auth, err := conf.DeviceAuth(ctx)
	if err != nil {
		return "", fmt.Errorf("asking %s for a login code: %w", endpoint.DeviceAuthURL, describe(err))
	}
	if show != nil {
		show(auth.VerificationURI, auth.VerificationURIComplete, auth.UserCode)
	}
	tok, err := conf.DeviceAccessToken(ctx, auth)
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
	case errors.As(err, &re) && re.ErrorCode == "access_denied":
		return "", ErrDeviceDenied
	case errors.As(err, &re) && re.ErrorCode == "expired_token",
		// DeviceAccessToken stops polling at the code's expiry, with
		// DeadlineExceeded (as an HTTP client's timeout also says).
		errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil &&
			!auth.Expiry.IsZero() && !time.Now().Before(auth.Expiry):
		return "", fmt.Errorf("%w: log in again", ErrDeviceExpired)
	default:
		return "", fmt.Errorf("waiting for the login at %s: %w", endpoint.TokenURL, describe(err))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", fmt.Errorf("%s answered without an ID token: is the openid scope allowed for client %q?", endpoint.TokenURL, clientID)
	}
	return raw, nil
}

// deviceScopes is the scopes DeviceLogin asks for: asked, or the default
// for a provider that supports the listed scopes.
func deviceScopes(asked, supported []string) []string {
	if asked != nil {
		if !slices.Contains(asked, oidc.ScopeOpenID) {
			asked = append([]string{oidc.ScopeOpenID}, asked...)
		}
		return asked
	}
	scopes := []string{oidc.ScopeOpenID, "profile", "email"}
	if slices.Contains(supported, groupsScope) {
		scopes = append(scopes, groupsScope)
	}
	return scopes
}

// describe turns an OAuth 2.0 error response into what the provider said,
// without the response's body in full.
func describe(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode == "" {
		return err
	}
	if re.ErrorDescription != "" {
		return fmt.Errorf("%s: %s", re.ErrorCode, quote(re.ErrorDescription))
	}
	return errors.New(re.ErrorCode)
}
