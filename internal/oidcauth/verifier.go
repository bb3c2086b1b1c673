package oidcauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

const (
	// RetryAfter is how long a failure to reach the issuer (its discovery
	// document or its keys) is remembered: within it Verify and Discover
	// answer that failure at once instead of asking again, so that a
	// provider that is down is not flooded and no login waits on a timeout
	// twice. It is also the least time between two fetches of the keys.
	RetryAfter = 10 * time.Second

	// fetchTimeout bounds one discovery or one fetch of the keys, whatever
	// the HTTP client's timeout.
	fetchTimeout = 10 * time.Second
	// httpTimeout is the timeout of the HTTP client used when none is given.
	httpTimeout = 30 * time.Second
	// maxTokenSize refuses before parsing what no ID token is: a provider's
	// token with hundreds of groups is still far smaller.
	maxTokenSize = 64 << 10
)

// Identity is who a verified ID token says its bearer is.
type Identity struct {
	// Issuer and Subject (the iss and sub claims) name the user for good:
	// a provider never gives a subject to another user. Key users on them.
	Issuer  string
	Subject string
	// Username is the claim Config.UsernameClaim names (by default
	// preferred_username, else a verified email, else sub). Some providers
	// let users change it: bind roles to it only where the provider does
	// not.
	Username string
	// Email and EmailVerified are the email and email_verified claims;
	// empty and false when absent.
	Email         string
	EmailVerified bool
	// Groups is the claim Config.GroupsClaim names, nil when absent.
	Groups []string
	// Expiry is when the token expires (its exp claim): a session made
	// from it ends then at the latest.
	Expiry time.Time
}

// Verifier checks ID tokens of one issuer and client. It is safe for
// concurrent use.
//
// It learns the issuer's endpoints by OpenID Connect Discovery, lazily: a
// Verifier whose issuer did not answer at NewVerifier is still made, and
// until discovery succeeds each Verify (or Discover) tries it again, at
// most once every RetryAfter, answering ErrUnavailable meanwhile. So a
// server starts while its identity provider is down, its single sign-on
// logins answer 503 until the provider answers, and then work without a
// restart. Once discovery has succeeded it is not repeated. The signing
// keys are fetched when a token names a key not known yet (the first
// token, or a new key after a rotation), at most once every RetryAfter.
type Verifier struct {
	cfg    Config
	client *http.Client

	mu sync.Mutex
	// verifier is nil until discovery succeeds.
	verifier *oidc.IDTokenVerifier
	// trying is closed when the discovery under way ends; nil when none is.
	trying chan struct{}
	// failed is the last discovery's error (ErrUnavailable), failedAt when.
	failed   error
	failedAt time.Time
}

// NewVerifier returns a Verifier of the tokens that cfg's issuer issues to
// cfg's client, after one try at discovery within ctx. It fails only when
// cfg is invalid: an issuer that does not answer is asked again later (see
// Verifier). Discover tells whether discovery has succeeded, to log it.
//
// httpClient reaches the issuer, for discovery and keys; nil means a
// client with a 30 s timeout. Each discovery and each fetch of the keys
// also ends after 10 s.
func NewVerifier(ctx context.Context, cfg Config, httpClient *http.Client) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: httpTimeout}
	}
	v := &Verifier{cfg: cfg.withDefaults(), client: httpClient}
	// The error is Discover's to tell: it answers the same until
	// RetryAfter has passed.
	_, _ = v.idTokenVerifier(ctx)
	return v, nil
}

// Discover makes sure the issuer's discovery document has been read: nil
// if it has been, now or before; otherwise an error matching
// ErrUnavailable that says why, the last one if a try failed less than
// RetryAfter ago.
func (v *Verifier) Discover(ctx context.Context) error {
	_, err := v.idTokenVerifier(ctx)
	return err
}

// Verify checks rawIDToken and returns who it names. A refused token's
// error matches ErrInvalidToken and one of ErrMalformed, ErrWrongIssuer,
// ErrWrongAudience, ErrExpired, ErrBadSignature or ErrMissingClaim, and
// says what is wrong without repeating the token. ErrUnavailable means the
// token could not be checked: the issuer did not answer.
func (v *Verifier) Verify(ctx context.Context, rawIDToken string) (Identity, error) {
	// The claims are read once before the signature is checked, only to
	// say precisely why a token is refused: a token is accepted only
	// after go-oidc has checked its signature and then the same claims.
	claims, err := peek(rawIDToken)
	if err != nil {
		return Identity{}, err
	}
	now := v.cfg.Now()
	switch {
	case claims.Issuer != v.cfg.Issuer:
		return Identity{}, fmt.Errorf("%w: issued by %s; this server trusts %s (--oidc-issuer)",
			ErrWrongIssuer, quote(claims.Issuer), quote(v.cfg.Issuer))
	case !slices.Contains(claims.Audience, v.cfg.ClientID):
		return Identity{}, fmt.Errorf("%w: issued to %s, not to dockfleet's client %s (--oidc-client-id)",
			ErrWrongAudience, quoteList(claims.Audience), quote(v.cfg.ClientID))
	case claims.Expiry.Before(now):
		return Identity{}, expired(claims.Expiry, now)
	}

	idv, err := v.idTokenVerifier(ctx)
	if err != nil {
		return Identity{}, err
	}
	var sigErr error
	tok, err := idv.Verify(context.WithValue(ctx, sigErrKey{}, &sigErr), rawIDToken)
	var expiredErr *oidc.TokenExpiredError
	switch {
	case err == nil:
	case sigErr != nil:
		// ErrUnavailable or ErrBadSignature, from keySet.
		return Identity{}, sigErr
	case errors.As(err, &expiredErr):
		return Identity{}, expired(expiredErr.Expiry, now)
	default:
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return v.identity(tok)
}

// identity maps a verified token's claims to an Identity.
func (v *Verifier) identity(tok *oidc.IDToken) (Identity, error) {
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: its claims: %w", ErrMalformed, err)
	}
	if tok.Subject == "" {
		return Identity{}, fmt.Errorf("%w: it has no sub claim", ErrMissingClaim)
	}
	id := Identity{Issuer: tok.Issuer, Subject: tok.Subject, Expiry: tok.Expiry}
	id.Email, _ = claims["email"].(string)
	id.EmailVerified = isTrue(claims["email_verified"])

	switch name := v.cfg.UsernameClaim; {
	case name != "":
		s, ok := claims[name].(string)
		if !ok || s == "" {
			return Identity{}, fmt.Errorf("%w: it has no string claim %s, which names users here (--oidc-username-claim)",
				ErrMissingClaim, quote(name))
		}
		id.Username = s
	default:
		id.Username, _ = claims[DefaultUsernameClaim].(string)
		if id.Username == "" && id.EmailVerified {
			id.Username = id.Email
		}
		if id.Username == "" {
			id.Username = id.Subject
		}
	}

	switch g := claims[v.cfg.GroupsClaim].(type) {
	case nil:
	case string:
		id.Groups = []string{g}
	case []any:
		id.Groups = make([]string, 0, len(g))
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return Identity{}, fmt.Errorf("%w: its claim %s lists a %T, not a group name (--oidc-groups-claim)",
					ErrMissingClaim, quote(v.cfg.GroupsClaim), e)
			}
			id.Groups = append(id.Groups, s)
		}
	default:
		return Identity{}, fmt.Errorf("%w: its claim %s is a %T, not a list of group names (--oidc-groups-claim)",
			ErrMissingClaim, quote(v.cfg.GroupsClaim), g)
	}
	return id, nil
}

// idTokenVerifier returns go-oidc's verifier once discovery has succeeded,
// trying it when it has not and no try failed within RetryAfter.
// Callers that come while a try is under way wait for its outcome.
func (v *Verifier) idTokenVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	for {
		v.mu.Lock()
		if v.verifier != nil {
			idv := v.verifier
			v.mu.Unlock()
			return idv, nil
		}
		if trying := v.trying; trying != nil {
			v.mu.Unlock()
			select {
			case <-trying:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: waiting for the discovery of %s: %w", ErrUnavailable, v.cfg.Issuer, ctx.Err())
			}
		}
		if v.failed != nil && v.cfg.Now().Before(v.failedAt.Add(RetryAfter)) {
			err := v.failed
			v.mu.Unlock()
			return nil, err
		}
		trying := make(chan struct{})
		v.trying = trying
		v.mu.Unlock()

		idv, err := v.discover(ctx)

		v.mu.Lock()
		v.trying = nil
		close(trying)
		switch {
		case err == nil:
			v.verifier, v.failed = idv, nil
		case ctx.Err() == nil:
			// A caller that gave up says nothing about the issuer: only
			// the issuer's own failures hold the next tries back.
			v.failed, v.failedAt = err, v.cfg.Now()
		}
		v.mu.Unlock()
		return idv, err
	}
}

// discover reads the issuer's discovery document and makes go-oidc's
// verifier of its tokens.
func (v *Verifier) discover(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client), v.cfg.Issuer)
	if err != nil {
		var mismatch *oidc.IssuerMismatchError
		if errors.As(err, &mismatch) {
			return nil, fmt.Errorf("%w: the discovery document of %s names the issuer %s: set --oidc-issuer to exactly that",
				ErrUnavailable, v.cfg.Issuer, quote(mismatch.Discovered))
		}
		return nil, fmt.Errorf("%w: discovery of %s: %w (single sign-on answers 503 until it answers)", ErrUnavailable, v.cfg.Issuer, err)
	}
	var meta struct {
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("%w: the discovery document of %s: %w", ErrUnavailable, v.cfg.Issuer, err)
	}
	if meta.JWKSURI == "" {
		return nil, fmt.Errorf("%w: the discovery document of %s has no jwks_uri", ErrUnavailable, v.cfg.Issuer)
	}
	keys := &keySet{url: meta.JWKSURI, client: v.client, now: v.cfg.Now}
	return oidc.NewVerifier(v.cfg.Issuer, keys, &oidc.Config{
		ClientID:             v.cfg.ClientID,
		SupportedSigningAlgs: signingAlgs(meta.Algs),
		Now:                  v.cfg.Now,
	}), nil
}

// signingAlgs keeps the algorithms of the discovery document that go-oidc
// verifies; none means go-oidc's default, RS256. "none" and HMAC are never
// among them.
func signingAlgs(advertised []string) []string {
	var algs []string
	for _, a := range advertised {
		switch a {
		case oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
			oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA:
			algs = append(algs, a)
		}
	}
	return algs
}

// sigErrKey is the context key of the *error keySet writes its error to.
type sigErrKey struct{}

// peeked is what Verify reads of a token before its signature is checked.
type peeked struct {
	Issuer   string
	Audience []string
	Expiry   time.Time
}

// peek reads the iss, aud and exp claims of a compact JWS without
// verifying it.
func peek(raw string) (peeked, error) {
	if raw == "" {
		return peeked{}, fmt.Errorf("%w: the token is empty", ErrMalformed)
	}
	if len(raw) > maxTokenSize {
		return peeked{}, fmt.Errorf("%w: %d bytes, more than the %d an ID token may have here", ErrMalformed, len(raw), maxTokenSize)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return peeked{}, fmt.Errorf("%w: a signed JWT has 3 dot-separated parts, this has %d", ErrMalformed, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return peeked{}, fmt.Errorf("%w: its payload is not base64url", ErrMalformed)
	}
	var c struct {
		Issuer   string          `json:"iss"`
		Audience json.RawMessage `json:"aud"`
		Expiry   *json.Number    `json:"exp"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return peeked{}, fmt.Errorf("%w: its payload is not a JSON object of claims", ErrMalformed)
	}
	p := peeked{Issuer: c.Issuer}
	var one string
	switch {
	case len(c.Audience) == 0:
	case json.Unmarshal(c.Audience, &one) == nil:
		p.Audience = []string{one}
	case json.Unmarshal(c.Audience, &p.Audience) == nil:
	default:
		return peeked{}, fmt.Errorf("%w: its aud claim is neither a string nor a list of strings", ErrMalformed)
	}
	if c.Expiry == nil {
		return peeked{}, fmt.Errorf("%w: it has no exp claim", ErrMalformed)
	}
	exp, err := c.Expiry.Float64()
	if err != nil {
		return peeked{}, fmt.Errorf("%w: its exp claim is not a number", ErrMalformed)
	}
	p.Expiry = time.Unix(int64(exp), 0)
	return p, nil
}

func expired(exp, now time.Time) error {
	return fmt.Errorf("%w: it expired at %s, %s ago: log in again",
		ErrExpired, exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second))
}

// isTrue reads a boolean claim, also as the string some providers send.
func isTrue(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return b == "true"
	}
	return false
}

// quote quotes a claim's value for an error, cut short: a token's claims
// are whatever its sender wrote.
func quote(s string) string {
	const max = 100
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}

func quoteList(ss []string) string {
	if len(ss) == 0 {
		return "nobody (no aud claim)"
	}
	const max = 5
	q := make([]string, 0, max+1)
	for i, s := range ss {
		if i == max {
			q = append(q, fmt.Sprintf("and %d more", len(ss)-max))
			break
		}
		q = append(q, quote(s))
	}
	return strings.Join(q, ", ")
}
