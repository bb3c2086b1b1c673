package oidctest_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/oidctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The browser's flow, authorization code with PKCE, at the provider: the
// login page (or WithLogin) logs the user in, the code is exchanged with
// the PKCE verifier, and the ID token verifies. Without the verifier the
// code is refused.
func TestAuthorizationCodeWithPKCE(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []oidctest.Option
		// form is what the login page's form gets, empty if it is not shown.
		form string
	}{
		{name: "login page", form: "bob"},
		{name: "WithLogin", opts: []oidctest.Option{oidctest.WithLogin("bob")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := oidctest.Start(t, tt.opts...)
			ctx := oidc.ClientContext(t.Context(), p.Client())
			provider, err := oidc.NewProvider(ctx, p.Issuer())
			if err != nil {
				t.Fatal(err)
			}
			conf := &oauth2.Config{
				ClientID:    p.ClientID(),
				Endpoint:    provider.Endpoint(),
				RedirectURL: "http://127.0.0.1:43210/callback", // any port of the registered loopback URI
				Scopes:      []string{oidc.ScopeOpenID, "profile", "email", "groups"},
			}
			conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
			verifier := oauth2.GenerateVerifier()
			authURL := conf.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier))

			browser := browserOf(p)
			resp := get(t, browser, authURL)
			if tt.form != "" {
				body := read(t, resp)
				if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="authRequestID"`) {
					t.Fatalf("login page: got %s %q; want the form", resp.Status, body)
				}
				id := between(body, `name="authRequestID" value="`, `"`)
				resp = get(t, browser, p.Issuer()+"/login?authRequestID="+url.QueryEscape(id)+"&username="+tt.form)
			}
			// The provider's last redirect is to the client's redirect URI.
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("got %s %q; want a redirect to the client", resp.Status, read(t, resp))
			}
			back, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			if back.Host != "127.0.0.1:43210" || back.Query().Get("state") != "state-1" || back.Query().Get("code") == "" {
				t.Fatalf("redirected to %s; want the client's redirect URI with the state and a code", back)
			}
			code := back.Query().Get("code")

			if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption("not-the-verifier-"+verifier)); err == nil {
				t.Fatal("the code was exchanged with a wrong PKCE verifier")
			}
			tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchanging the code: %v", err)
			}
			raw, _ := tok.Extra("id_token").(string)
			v, err := oidcauth.NewVerifier(t.Context(), oidcauth.Config{Issuer: p.Issuer(), ClientID: p.ClientID()}, p.Client())
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Username != "bob" || !slices.Equal(id.Groups, []string{"dev"}) {
				t.Errorf("got %+v; want bob in dev", id)
			}
		})
	}
}

// browserOf is a client of p that follows redirects within p only, as a
// browser would until the client's redirect URI.
func browserOf(p *oidctest.Provider) *http.Client {
	c := *p.Client()
	issuer, _ := url.Parse(p.Issuer())
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host != issuer.Host {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &c
}

func get(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func read(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func between(s, start, end string) string {
	_, after, _ := strings.Cut(s, start)
	before, _, _ := strings.Cut(after, end)
	return before
}

// The provider's device page approves a code as ApproveDevice does.
func TestDevicePage(t *testing.T) {
	p := oidctest.Start(t)
	raw, err := oidcauth.DeviceLogin(t.Context(), p.Issuer(), p.ClientID(), p.Client(), func(_, complete, _ string) {
		resp := get(t, p.Client(), complete+"&username=alice")
		if body := read(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Logged in as alice") {
			t.Errorf("device page: got %s %q", resp.Status, body)
		}
	})
	if err != nil {
		t.Fatalf("DeviceLogin: %v", err)
	}
	if raw == "" {
		t.Fatal("no ID token")
	}
}

func TestHooksRefuseUnknown(t *testing.T) {
	p := oidctest.Start(t)
	if err := p.ApproveDevice("NOPE-NOPE", "alice"); err == nil {
		t.Error("ApproveDevice of an unknown code: no error")
	}
	if err := p.DenyDevice("NOPE-NOPE"); err == nil {
		t.Error("DenyDevice of an unknown code: no error")
	}
}

// The issuer is a loopback https URL, and only Client trusts it.
func TestIssuerIsLoopbackTLS(t *testing.T) {
	p := oidctest.Start(t)
	u, err := url.Parse(p.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(u.Host); u.Scheme != "https" || !net.ParseIP(host).IsLoopback() {
		t.Errorf("issuer %s; want https on a loopback address", p.Issuer())
	}
	untrusting := &http.Client{Transport: &http.Transport{}}
	defer untrusting.CloseIdleConnections()
	if resp, err := untrusting.Get(p.Issuer() + "/.well-known/openid-configuration"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without the provider's certificate reached it")
	}
}
