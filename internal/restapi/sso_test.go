package restapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/oidctest"
	"github.com/dockfleet/dockfleet/internal/store"
)

// Single sign-on against a real OpenID provider: a real signed ID token
// logs its user in, made at its first login, with its groups' bindings;
// a token of another issuer, an expired one, a tampered one and one
// naming a local user are refused, each audited.
func TestSSOLogin(t *testing.T) {
	p, other := oidctest.Start(t), oidctest.Start(t)
	f := newAuthzFixture(t)
	_, st := f.fresh(t)
	ctx := context.Background()
	v, err := oidcauth.NewVerifier(ctx, oidcauth.Config{Issuer: p.Issuer(), ClientID: p.ClientID()}, p.Client())
	if err != nil {
		t.Fatal(err)
	}
	h := newHandlerOn(t, st, f.ca, nil)
	h.sso, h.auth = v, api.AuthInfo{SSO: &api.SSOInfo{Issuer: p.Issuer(), ClientID: p.ClientID()}}
	c := &authCase{t: t, f: f, h: h, st: st}
	if err := st.CreateBinding(ctx, api.Binding{ID: "g1", Subject: "group:dev", Role: "operator", Project: "alpha", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	var info api.AuthInfo
	if code, _ := c.do("", "GET", "/v1/auth", "", &info); code != 200 || info.SSO == nil || info.SSO.Issuer != p.Issuer() {
		t.Errorf("auth info: %d %+v", code, info)
	}
	var l api.Login
	if code, body := c.do("", "POST", "/v1/login/sso", `{"idToken": "`+p.IDToken("bob")+`"}`, &l); code != 200 || l.User != "bob" {
		t.Fatalf("SSO login: %d %s", code, body)
	}
	var who api.Whoami
	c.do(l.Token, "GET", "/v1/whoami", "", &who)
	if len(who.Grants) != 1 || who.Grants[0].Role != "operator" || who.Grants[0].Project != "alpha" {
		t.Errorf("bob's grants %+v; want operator in alpha, through group dev", who.Grants)
	}
	if code, _ := c.do(l.Token, "GET", "/v1/projects/alpha/deployments", "", nil); code != 200 {
		t.Errorf("bob reading alpha: %d", code)
	}
	if u, _, err := st.GetUser(ctx, "bob"); err != nil || !u.SSO {
		t.Errorf("bob after his first login: %+v %v; want an SSO user", u, err)
	}

	tok := p.IDToken("alice")
	refused := []struct{ name, token, says string }{
		{"another issuer", other.IDToken("alice"), "another issuer"},
		{"expired", p.IDToken("alice", oidctest.ExpiresAt(time.Now().Add(-time.Minute))), "expired"},
		{"tampered", tok[:len(tok)-4] + "AAAA", "signature"},
		{"another audience", p.IDToken("alice", oidctest.Audience("someone-else")), "another audience"},
	}
	for _, r := range refused {
		code, body := c.do("", "POST", "/v1/login/sso", `{"idToken": "`+r.token+`"}`, nil)
		if code != http.StatusUnauthorized || !strings.Contains(body, r.says) {
			t.Errorf("%s token: %d %s; want 401 saying %q", r.name, code, body, r.says)
		}
	}
	// A local user is not taken over by a provider's user of its name.
	if code, body := c.do("", "POST", "/v1/login/sso", `{"idToken": "`+p.IDToken("alice", oidctest.Claim("preferred_username", "op"))+`"}`, nil); code != http.StatusUnauthorized || !strings.Contains(body, "local user op") {
		t.Errorf("SSO as local user op: %d %s; want 401", code, body)
	}
	recs, _ := st.ListAudit(ctx, store.AuditFilter{})
	failed := 0
	for _, r := range recs {
		if r.Action == "POST /v1/login/sso" && strings.HasPrefix(r.Result, "401") {
			failed++
		}
	}
	if failed != len(refused)+1 {
		t.Errorf("%d refused SSO logins audited; want %d", failed, len(refused)+1)
	}
}
