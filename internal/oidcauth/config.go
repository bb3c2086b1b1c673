package oidcauth

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Default claim names.
const (
	DefaultUsernameClaim = "preferred_username"
	DefaultGroupsClaim   = "groups"
)

// Config says which identity provider and which of its clients a server
// trusts.
type Config struct {
	// Issuer is the provider's issuer URL, exactly as its tokens' iss claim
	// and its discovery document say it: https, no query or fragment (http
	// only for a loopback host, for development).
	Issuer string
	// ClientID is the client the provider issues dockfleet's tokens to: a
	// token must name it in its aud claim.
	ClientID string
	// UsernameClaim names the claim that gives an Identity its Username.
	// Empty means preferred_username, else email when email_verified is
	// true, else sub. A claim named here is required in every token.
	UsernameClaim string
	// GroupsClaim names the claim that lists the user's groups, a list of
	// strings or one string. Empty means "groups". A token without it has
	// no groups.
	GroupsClaim string
	// Now is the clock tokens' expiry is checked against and discovery's
	// retries are timed by; nil means time.Now. Tests move it.
	Now func() time.Time
}

// Validate says what is wrong with c, naming each bad field, its value and
// the server flag that sets it; nil if nothing is.
func (c Config) Validate() error {
	var errs []error
	if err := validateIssuer(c.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("OIDC issuer %q: %w (--oidc-issuer)", c.Issuer, err))
	}
	if strings.TrimSpace(c.ClientID) == "" {
		errs = append(errs, fmt.Errorf("OIDC client ID %q: required, the ID of dockfleet's client at the identity provider (--oidc-client-id)", c.ClientID))
	}
	for _, claim := range []struct{ field, name, flag string }{
		{"OIDC username claim", c.UsernameClaim, "--oidc-username-claim"},
		{"OIDC groups claim", c.GroupsClaim, "--oidc-groups-claim"},
	} {
		if strings.ContainsFunc(claim.name, func(r rune) bool { return r <= ' ' }) {
			errs = append(errs, fmt.Errorf("%s %q: a claim name has no spaces or control characters (%s)", claim.field, claim.name, claim.flag))
		}
	}
	return errors.Join(errs...)
}

// validateIssuer checks what OpenID Connect Discovery asks of an issuer
// URL: https, a host, no query or fragment.
func validateIssuer(issuer string) error {
	if issuer == "" {
		return errors.New("required, the identity provider's issuer URL (https://...)")
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	case u.Scheme == "http":
		return errors.New("an issuer uses https (http only on a loopback host)")
	default:
		return errors.New("want an https:// URL")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return errors.New("an issuer URL has no user, query or fragment")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c Config) withDefaults() Config {
	if c.GroupsClaim == "" {
		c.GroupsClaim = DefaultGroupsClaim
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
