// Package oidctest runs a real OpenID Connect provider in a test's process,
// for the tests of single sign-on: github.com/zitadel/oidc/v3's pkg/op
// serves discovery, keys, the token endpoint, the device and the
// authorization-code flows (with PKCE) on a loopback TLS port, signing with
// a key of its own; this package gives it an in-memory storage, users, one
// client, and hooks that stand for what a person does in a browser
// (ApproveDevice, the login page) or what an attacker sends (IDToken with
// options). A second Provider started in the same test is another issuer.
//
// Only tests import it.
package oidctest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// DefaultClientID is the ID of the provider's client unless WithClientID
// gives another.
const DefaultClientID = "dockfleet"

// IDTokenLifetime is how long the ID tokens the provider issues are valid.
const IDTokenLifetime = time.Hour

// GroupsScope is the scope that puts the groups claim in ID tokens.
const GroupsScope = "groups"

// User is a user of the provider.
type User struct {
	// Username is the preferred_username claim and the name tests use.
	Username string
	// Subject is the sub claim; empty means "sub-" + Username.
	Subject string
	// Email is the email claim, verified (email_verified true) unless
	// EmailUnverified.
	Email           string
	EmailUnverified bool
	// Groups is the groups claim, given with the groups scope.
	Groups []string
}

// DefaultUsers are the users of a Provider started without WithUser.
var DefaultUsers = []User{
	{Username: "alice", Email: "alice@example.com", Groups: []string{"fleet-admins", "dev"}},
	{Username: "bob", Email: "bob@example.com", Groups: []string{"dev"}},
}

// Option changes the provider Start starts.
type Option func(*options)

type options struct {
	users       []User
	clientID    string
	secret      string
	autoApprove string
	autoLogin   string
	noGroups    bool
}

// WithUser adds a user; the first WithUser replaces DefaultUsers.
func WithUser(u User) Option {
	return func(o *options) { o.users = append(o.users, u) }
}

// WithClientID sets the client's ID (DefaultClientID otherwise).
func WithClientID(id string) Option {
	return func(o *options) { o.clientID = id }
}

// WithClientSecret makes the client confidential, authenticated by secret
// (HTTP basic authentication); it is public otherwise, as the CLI's is.
func WithClientSecret(secret string) Option {
	return func(o *options) { o.secret = secret }
}

// WithAutoApprove approves every device login as username as soon as it
// is asked for, as if the user had entered the code at once.
func WithAutoApprove(username string) Option {
	return func(o *options) { o.autoApprove = username }
}

// WithLogin logs every browser login (the authorization-code flow) in as
// username without showing the login page.
func WithLogin(username string) Option {
	return func(o *options) { o.autoLogin = username }
}

// WithoutGroupsScope leaves groups out of the discovery document's
// scopes_supported, as providers without a groups scope do.
func WithoutGroupsScope() Option {
	return func(o *options) { o.noGroups = true }
}

// Provider is a running OpenID provider. Its methods are safe for
// concurrent use.
type Provider struct {
	t      testing.TB
	srv    *httptest.Server
	op     *op.Provider
	st     *storage
	issuer string
	// autoLogin is WithLogin's user.
	autoLogin string
	down      atomic.Bool
	requests  atomic.Int64
}

// Start starts a provider on a loopback port, with TLS, until the test
// ends. Its issuer is https://127.0.0.1:PORT; Client trusts its
// certificate.
func Start(t testing.TB, opts ...Option) *Provider {
	t.Helper()
	o := options{clientID: DefaultClientID}
	for _, opt := range opts {
		opt(&o)
	}
	if o.users == nil {
		o.users = DefaultUsers
	}
	st, err := newStorage(o)
	if err != nil {
		t.Fatal(err)
	}

	p := &Provider{t: t, st: st, autoLogin: o.autoLogin}
	// The issuer is the server's URL, so the listener comes first and the
	// handler after.
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	p.issuer = "https://" + p.srv.Listener.Addr().String()

	scopes := []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, GroupsScope}
	if o.noGroups {
		scopes = scopes[:3]
	}
	config := &op.Config{
		CodeMethodS256:  true,
		SupportedScopes: scopes,
		SupportedClaims: append(slices.Clone(op.DefaultSupportedClaims), "groups"),
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime: 5 * time.Minute,
			// The shortest the protocol can say (in seconds): a client
			// polls a second after the code is shown.
			PollInterval: time.Second,
			UserFormPath: devicePath,
			UserCode:     op.UserCodeBase20,
		},
	}
	if _, err := rand.Read(config.CryptoKey[:]); err != nil {
		t.Fatal(err)
	}
	if p.op, err = op.NewProvider(config, st, op.StaticIssuer(p.issuer)); err != nil {
		t.Fatal(err)
	}
	p.srv.StartTLS()
	return p
}

// Issuer returns the provider's issuer URL.
func (p *Provider) Issuer() string { return p.issuer }

// ClientID returns the ID of the provider's client.
func (p *Provider) ClientID() string { return p.st.client.id }

// Client returns an HTTP client that trusts the provider's certificate.
func (p *Provider) Client() *http.Client { return p.srv.Client() }

// CertPEM returns the provider's certificate, PEM-encoded: trusting it
// trusts the provider (for a client configured by a CA file).
func (p *Provider) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

// SetDown makes every request answer 503 while down is true, as a
// provider that is down behind its load balancer.
func (p *Provider) SetDown(down bool) { p.down.Store(down) }

// Requests returns how many requests the provider has received, those it
// answered 503 to while down included.
func (p *Provider) Requests() int64 { return p.requests.Load() }

// ApproveDevice approves the device login of userCode as username, as the
// user does in a browser.
func (p *Provider) ApproveDevice(userCode, username string) error {
	return p.st.completeDevice(userCode, username, false)
}

// DenyDevice denies the device login of userCode, as the user does in a
// browser.
func (p *Provider) DenyDevice(userCode string) error {
	return p.st.completeDevice(userCode, "", true)
}

// RotateKey makes the provider sign with a new key from now on; its keys
// before stay published.
func (p *Provider) RotateKey() error { return p.st.rotate() }

// TokenOption changes the ID token IDToken makes.
type TokenOption func(claims map[string]any)

// ExpiresAt sets the token's exp claim (an hour from now otherwise); a
// time in the past makes an expired token, issued an hour before.
func ExpiresAt(t time.Time) TokenOption {
	return func(c map[string]any) {
		c["exp"] = t.Unix()
		if iat, _ := c["iat"].(int64); iat >= t.Unix() {
			c["iat"] = t.Add(-IDTokenLifetime).Unix()
			c["auth_time"] = c["iat"]
		}
	}
}

// Audience sets the token's aud claim (the client's ID otherwise).
func Audience(aud ...string) TokenOption {
	return func(c map[string]any) { c["aud"] = aud }
}

// IssuerClaim sets the token's iss claim: the token still carries this
// provider's signature, as a forgery by another issuer would.
func IssuerClaim(iss string) TokenOption {
	return func(c map[string]any) { c["iss"] = iss }
}

// Claim sets a claim; nil removes it.
func Claim(name string, value any) TokenOption {
	return func(c map[string]any) {
		if value == nil {
			delete(c, name)
			return
		}
		c[name] = value
	}
}

// IDToken returns an ID token the provider signs for username, with the
// claims a device or browser login with the groups scope gives, changed by
// opts. It fails the test if there is no such user.
func (p *Provider) IDToken(username string, opts ...TokenOption) string {
	p.t.Helper()
	u, ok := p.st.user(username)
	if !ok {
		p.t.Fatalf("oidctest: no user %q", username)
	}
	now := time.Now()
	claims := map[string]any{
		"iss":       p.issuer,
		"sub":       u.Subject,
		"aud":       []string{p.st.client.id},
		"azp":       p.st.client.id,
		"iat":       now.Unix(),
		"auth_time": now.Unix(),
		"exp":       now.Add(IDTokenLifetime).Unix(),
		"amr":       []string{"pwd"},
	}
	info := new(oidc.UserInfo)
	u.fill(info, []string{oidc.ScopeProfile, oidc.ScopeEmail, GroupsScope})
	b, err := json.Marshal(info)
	if err != nil {
		p.t.Fatal(err)
	}
	var infoClaims map[string]any
	if err := json.Unmarshal(b, &infoClaims); err != nil {
		p.t.Fatal(err)
	}
	maps.Copy(claims, infoClaims)
	for _, opt := range opts {
		opt(claims)
	}
	tok, err := p.st.sign(claims)
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

func (p *Provider) serve(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if p.down.Load() {
		http.Error(w, "oidctest: the provider is down (SetDown)", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case loginPath:
		p.login(w, r)
	case devicePath:
		p.device(w, r)
	default:
		p.op.ServeHTTP(w, r)
	}
}

// callbackURL is where the login page sends the browser once the user has
// logged in: the provider's, which redirects to the client with a code.
func (p *Provider) callbackURL(ctx context.Context, authRequestID string) string {
	return op.AuthCallbackURL(p.op)(op.ContextWithIssuer(ctx, p.issuer), authRequestID)
}
