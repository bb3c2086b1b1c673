package oidcauth

import (
	"errors"
	"fmt"
)

var (
	// ErrUnavailable means the identity provider did not answer (discovery
	// or its keys): no token can be checked until it does. The API answers
	// 503.
	ErrUnavailable = errors.New("oidcauth: the identity provider is unavailable")

	// ErrInvalidToken is what every refused token's error matches; the
	// errors below say why. The API answers 401.
	ErrInvalidToken = errors.New("oidcauth: invalid ID token")

	// ErrMalformed: not a signed JWT with the claims an ID token has.
	ErrMalformed = fmt.Errorf("%w: malformed", ErrInvalidToken)
	// ErrWrongIssuer: issued by another provider than Config.Issuer.
	ErrWrongIssuer = fmt.Errorf("%w: another issuer", ErrInvalidToken)
	// ErrWrongAudience: issued to another client than Config.ClientID.
	ErrWrongAudience = fmt.Errorf("%w: another audience", ErrInvalidToken)
	// ErrExpired: its exp claim is past.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalidToken)
	// ErrBadSignature: none of the issuer's keys verifies its signature.
	ErrBadSignature = fmt.Errorf("%w: bad signature", ErrInvalidToken)
	// ErrMissingClaim: a claim Config requires is absent, or is of the
	// wrong type.
	ErrMissingClaim = fmt.Errorf("%w: missing claim", ErrInvalidToken)

	// ErrNoDeviceFlow: the provider does not offer the device
	// authorization grant (no device_authorization_endpoint).
	ErrNoDeviceFlow = errors.New("oidcauth: the identity provider offers no device login")
	// ErrDeviceDenied: the user refused the device login at the provider.
	ErrDeviceDenied = errors.New("oidcauth: the login was denied at the identity provider")
	// ErrDeviceExpired: the device code expired before the user approved it.
	ErrDeviceExpired = errors.New("oidcauth: the login code expired before it was approved")
)
