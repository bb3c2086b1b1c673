package oidcauth_test

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/oidctest"
)

// Every goroutine go-oidc starts to fetch keys ends with its request.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newVerifier returns a Verifier of p's tokens whose clock is clock (the
// real one if nil); configure, if not nil, changes its Config first.
func newVerifier(t *testing.T, p *oidctest.Provider, clock clockwork.Clock, configure func(*oidcauth.Config)) *oidcauth.Verifier {
	t.Helper()
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	cfg := oidcauth.Config{Issuer: p.Issuer(), ClientID: p.ClientID(), Now: clock.Now}
	if configure != nil {
		configure(&cfg)
	}
	v, err := oidcauth.NewVerifier(t.Context(), cfg, p.Client())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyRealToken(t *testing.T) {
	p := oidctest.Start(t)
	v := newVerifier(t, p, nil, nil)
	if err := v.Discover(t.Context()); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	before := time.Now().Truncate(time.Second)
	id, err := v.Verify(t.Context(), p.IDToken("alice"))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := oidcauth.Identity{Issuer: p.Issuer(), Subject: "sub-alice", Username: "alice",
		Email: "alice@example.com", EmailVerified: true, Groups: []string{"fleet-admins", "dev"}}
	exp := id.Expiry
	id.Expiry = time.Time{}
	if !equalIdentity(id, want) {
		t.Errorf("got %+v; want %+v", id, want)
	}
	if lo, hi := before.Add(oidctest.IDTokenLifetime), time.Now().Add(oidctest.IDTokenLifetime); exp.Before(lo) || exp.After(hi) {
		t.Errorf("got expiry %v; want between %v and %v", exp, lo, hi)
	}
}

func equalIdentity(a, b oidcauth.Identity) bool {
	return a.Issuer == b.Issuer && a.Subject == b.Subject && a.Username == b.Username && a.Email == b.Email &&
		a.EmailVerified == b.EmailVerified && slices.Equal(a.Groups, b.Groups) && a.Expiry.Equal(b.Expiry)
}

// A token is refused unless it is signed by the issuer's key, names the
// issuer, the client and a future expiry; the error says which failed and
// does not repeat the token.
func TestVerifyRefuses(t *testing.T) {
	p := oidctest.Start(t)
	other := oidctest.Start(t) // another issuer, with its own key
	v := newVerifier(t, p, nil, nil)
	good := p.IDToken("alice")

	tests := []struct {
		name  string
		token string
		want  error
		// says is in the error's text.
		says string
	}{
		{"another issuer", other.IDToken("alice"), oidcauth.ErrWrongIssuer, other.Issuer()},
		{"another issuer's key, naming ours", other.IDToken("alice", oidctest.IssuerClaim(p.Issuer())),
			oidcauth.ErrBadSignature, "the issuer does not list"},
		{"expired", p.IDToken("alice", oidctest.ExpiresAt(time.Now().Add(-time.Minute))), oidcauth.ErrExpired, "expired at"},
		{"another audience", p.IDToken("alice", oidctest.Audience("someone-else")), oidcauth.ErrWrongAudience, `"someone-else"`},
		{"no audience", p.IDToken("alice", oidctest.Claim("aud", nil)), oidcauth.ErrWrongAudience, "no aud claim"},
		{"flipped signature byte", flipSignatureByte(t, good), oidcauth.ErrBadSignature, "does not verify it"},
		{"payload changed, signature kept", withPayloadOf(t, good, p.IDToken("bob")), oidcauth.ErrBadSignature, "does not verify it"},
		{"unsigned (alg none)", unsigned(t, good), oidcauth.ErrInvalidToken, "malformed jwt"},
		{"no exp", p.IDToken("alice", oidctest.Claim("exp", nil)), oidcauth.ErrMalformed, "no exp"},
		{"not a JWT", "not-a-token", oidcauth.ErrMalformed, "3 dot-separated parts"},
		{"empty", "", oidcauth.ErrMalformed, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), tt.token)
			t.Logf("refused: %v", err)
			if err == nil {
				t.Fatalf("got %+v, no error; want %v", id, tt.want)
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, oidcauth.ErrInvalidToken) || errors.Is(err, oidcauth.ErrUnavailable) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("got %q; want it to say %q", err, tt.says)
			}
			if parts := strings.Split(tt.token, "."); len(parts) == 3 {
				for _, part := range parts {
					if len(part) > 8 && strings.Contains(err.Error(), part) {
						t.Errorf("the error %q repeats the token", err)
					}
				}
			}
		})
	}
}

// flipSignatureByte changes one byte of tok's signature.
func flipSignatureByte(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)/2] ^= 0x01
	parts[2] = base64.RawURLEncoding.EncodeToString(sig)
	return strings.Join(parts, ".")
}

// withPayloadOf is tok with the claims of another token: a user who
// would be someone else.
func withPayloadOf(t *testing.T, tok, other string) string {
	t.Helper()
	parts, otherParts := strings.Split(tok, "."), strings.Split(other, ".")
	parts[1] = otherParts[1]
	return strings.Join(parts, ".")
}

// unsigned is tok's claims with the "none" algorithm and no signature.
func unsigned(t *testing.T, tok string) string {
	t.Helper()
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	return header + "." + strings.Split(tok, ".")[1] + "."
}

// Expiry is judged by Config.Now: a token verified an hour and a minute
// after it was issued is refused.
func TestVerifyExpiresByClock(t *testing.T) {
	p := oidctest.Start(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	v := newVerifier(t, p, clock, nil)
	tok := p.IDToken("bob")
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify now: %v", err)
	}
	clock.Advance(oidctest.IDTokenLifetime + time.Minute)
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, oidcauth.ErrExpired) {
		t.Fatalf("Verify an hour later: got %v; want %v", err, oidcauth.ErrExpired)
	}
}

func TestVerifyMapsClaims(t *testing.T) {
	p := oidctest.Start(t,
		oidctest.WithUser(oidctest.User{Username: "carol", Email: "carol@example.com", Groups: []string{"ops"}}),
		oidctest.WithUser(oidctest.User{Username: "dave", Email: "dave@example.com", EmailUnverified: true}),
	)
	tests := []struct {
		name      string
		configure func(*oidcauth.Config)
		username  string
		opts      []oidctest.TokenOption
		wantUser  string
		wantGroup []string
		wantErr   error
	}{
		{name: "preferred_username", username: "carol", wantUser: "carol", wantGroup: []string{"ops"}},
		{name: "verified email without preferred_username", username: "carol",
			opts:     []oidctest.TokenOption{oidctest.Claim("preferred_username", nil)},
			wantUser: "carol@example.com", wantGroup: []string{"ops"}},
		{name: "unverified email is not a username", username: "dave",
			opts:     []oidctest.TokenOption{oidctest.Claim("preferred_username", nil)},
			wantUser: "sub-dave"},
		{name: "email_verified as a string", username: "carol",
			opts:     []oidctest.TokenOption{oidctest.Claim("preferred_username", nil), oidctest.Claim("email_verified", "true")},
			wantUser: "carol@example.com", wantGroup: []string{"ops"}},
		{name: "username claim configured", username: "carol",
			configure: func(c *oidcauth.Config) { c.UsernameClaim = "email" },
			wantUser:  "carol@example.com", wantGroup: []string{"ops"}},
		{name: "configured username claim missing", username: "carol",
			configure: func(c *oidcauth.Config) { c.UsernameClaim = "upn" },
			wantErr:   oidcauth.ErrMissingClaim},
		{name: "groups as one string", username: "carol",
			opts:     []oidctest.TokenOption{oidctest.Claim("groups", "ops")},
			wantUser: "carol", wantGroup: []string{"ops"}},
		{name: "no groups", username: "dave", wantUser: "dave"},
		{name: "groups claim configured", username: "carol",
			configure: func(c *oidcauth.Config) { c.GroupsClaim = "roles" },
			opts:      []oidctest.TokenOption{oidctest.Claim("roles", []string{"fleet-operator"})},
			wantUser:  "carol", wantGroup: []string{"fleet-operator"}},
		{name: "a group that is not a string", username: "carol",
			opts:    []oidctest.TokenOption{oidctest.Claim("groups", []any{"ops", 7})},
			wantErr: oidcauth.ErrMissingClaim},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, p, nil, tt.configure)
			id, err := v.Verify(t.Context(), p.IDToken(tt.username, tt.opts...))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %+v, %v; want %v", id, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Username != tt.wantUser || !slices.Equal(id.Groups, tt.wantGroup) {
				t.Errorf("got username %q, groups %q; want %q, %q", id.Username, id.Groups, tt.wantUser, tt.wantGroup)
			}
		})
	}
}

// A server whose identity provider is down starts; its logins answer
// ErrUnavailable, without asking the provider more than once every
// RetryAfter, and work once the provider answers.
func TestDiscoveryRetried(t *testing.T) {
	p := oidctest.Start(t)
	tok := p.IDToken("alice")
	p.SetDown(true)
	clock := clockwork.NewFakeClockAt(time.Now())
	v := newVerifier(t, p, clock, nil)
	if err := v.Discover(t.Context()); !errors.Is(err, oidcauth.ErrUnavailable) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Discover while down: got %v; want %v saying 503", err, oidcauth.ErrUnavailable)
	}
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, oidcauth.ErrUnavailable) || errors.Is(err, oidcauth.ErrInvalidToken) {
		t.Fatalf("Verify while down: got %v; want %v", err, oidcauth.ErrUnavailable)
	}

	p.SetDown(false)
	asked := p.Requests()
	clock.Advance(oidcauth.RetryAfter - time.Second)
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, oidcauth.ErrUnavailable) {
		t.Fatalf("Verify within RetryAfter of the failure: got %v; want %v", err, oidcauth.ErrUnavailable)
	}
	if n := p.Requests(); n != asked {
		t.Errorf("the provider got %d requests within RetryAfter of the failure; want none", n-asked)
	}

	clock.Advance(time.Second)
	id, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("Verify once the provider is up: %v", err)
	}
	if id.Username != "alice" {
		t.Errorf("got username %q; want alice", id.Username)
	}
	if err := v.Discover(t.Context()); err != nil {
		t.Errorf("Discover after success: %v", err)
	}
}

// Keys that cannot be fetched make a token unverifiable, not invalid; they
// are asked for again RetryAfter later.
func TestKeysUnavailable(t *testing.T) {
	p := oidctest.Start(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	v := newVerifier(t, p, clock, nil)
	if err := v.Discover(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok := p.IDToken("alice")
	p.SetDown(true) // after discovery, before the keys are fetched
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, oidcauth.ErrUnavailable) || errors.Is(err, oidcauth.ErrInvalidToken) {
		t.Fatalf("Verify while the keys cannot be fetched: got %v; want %v", err, oidcauth.ErrUnavailable)
	}
	p.SetDown(false)
	asked := p.Requests()
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, oidcauth.ErrUnavailable) || p.Requests() != asked {
		t.Fatalf("Verify within RetryAfter of the failure: got %v after %d requests; want %v after none",
			err, p.Requests()-asked, oidcauth.ErrUnavailable)
	}
	clock.Advance(oidcauth.RetryAfter)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify RetryAfter later: %v", err)
	}
}

// Forged tokens cost the issuer at most a fetch of its keys every
// RetryAfter.
func TestForgedTokensFetchKeysAtMostEveryRetryAfter(t *testing.T) {
	p := oidctest.Start(t)
	other := oidctest.Start(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	v := newVerifier(t, p, clock, nil)
	good := p.IDToken("alice")
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	asked := p.Requests()
	for range 20 {
		for _, forged := range []string{flipSignatureByte(t, good), other.IDToken("alice", oidctest.IssuerClaim(p.Issuer()))} {
			if _, err := v.Verify(t.Context(), forged); !errors.Is(err, oidcauth.ErrBadSignature) {
				t.Fatalf("got %v; want %v", err, oidcauth.ErrBadSignature)
			}
		}
	}
	if n := p.Requests() - asked; n != 0 {
		t.Errorf("40 forged tokens within RetryAfter of a fetch made %d requests to the issuer; want none", n)
	}
	clock.Advance(oidcauth.RetryAfter)
	for range 20 {
		if _, err := v.Verify(t.Context(), flipSignatureByte(t, good)); !errors.Is(err, oidcauth.ErrBadSignature) {
			t.Fatalf("got %v; want %v", err, oidcauth.ErrBadSignature)
		}
	}
	if n := p.Requests() - asked; n != 1 {
		t.Errorf("20 forged tokens RetryAfter later made %d requests to the issuer; want 1", n)
	}
}

// After the issuer rotates its key, a token signed with the new one is
// verified once the keys may be fetched again.
func TestKeyRotation(t *testing.T) {
	p := oidctest.Start(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	v := newVerifier(t, p, clock, nil)
	if _, err := v.Verify(t.Context(), p.IDToken("alice")); err != nil {
		t.Fatal(err)
	}
	if err := p.RotateKey(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(oidcauth.RetryAfter)
	if _, err := v.Verify(t.Context(), p.IDToken("bob")); err != nil {
		t.Fatalf("Verify with the new key: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  oidcauth.Config
		says []string // in the error, none if valid
	}{
		{"valid", oidcauth.Config{Issuer: "https://idp.example.com/realms/x", ClientID: "dockfleet"}, nil},
		{"http on loopback", oidcauth.Config{Issuer: "http://127.0.0.1:5556", ClientID: "dockfleet"}, nil},
		{"http on localhost", oidcauth.Config{Issuer: "http://localhost:5556/dex", ClientID: "dockfleet"}, nil},
		{"empty", oidcauth.Config{}, []string{"--oidc-issuer", "--oidc-client-id", "required"}},
		{"http elsewhere", oidcauth.Config{Issuer: "http://idp.example.com", ClientID: "c"}, []string{"uses https", "--oidc-issuer"}},
		{"no scheme", oidcauth.Config{Issuer: "idp.example.com", ClientID: "c"}, []string{"want an https:// URL"}},
		{"query", oidcauth.Config{Issuer: "https://idp.example.com/?tenant=1", ClientID: "c"}, []string{"no user, query or fragment"}},
		{"no host", oidcauth.Config{Issuer: "https:///path", ClientID: "c"}, []string{"no host"}},
		{"spaces in a claim name", oidcauth.Config{Issuer: "https://idp.example.com", ClientID: "c", GroupsClaim: "my groups"},
			[]string{"--oidc-groups-claim"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.says == nil {
				if err != nil {
					t.Fatalf("got %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil; want an error saying %q", tt.says)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("got %q; want it to say %q", err, s)
				}
			}
		})
	}
	if _, err := oidcauth.NewVerifier(t.Context(), oidcauth.Config{}, nil); err == nil {
		t.Error("NewVerifier with an empty Config: got no error")
	}
}
