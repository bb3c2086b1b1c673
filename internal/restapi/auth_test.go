package restapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	_ "modernc.org/sqlite"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/store"
)

// authCase is a handler on a fresh store with the matrix fixture's users,
// on a fake clock.
type authCase struct {
	t     *testing.T
	f     *authzFixture
	h     *Handler
	st    store.Store
	clock *clockwork.FakeClock
}

func newAuthCase(t *testing.T, f *authzFixture) *authCase {
	_, st := f.fresh(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	return &authCase{t: t, f: f, h: newHandlerOn(t, st, f.ca, clock), st: st, clock: clock}
}

// do makes a request with the bearer token tok ("" for none) and decodes
// a JSON answer into out, if given.
func (c *authCase) do(tok, method, path, body string, out any) (int, string) {
	c.t.Helper()
	c.f.bearer["test"] = tok
	code, answer := c.f.call(c.h, "test", method, path, body)
	if out != nil && code < 300 {
		if err := json.Unmarshal([]byte(answer), out); err != nil {
			c.t.Fatalf("%s %s: decoding %q: %v", method, path, answer, err)
		}
	}
	return code, answer
}

func (c *authCase) login(user, password string) (int, api.Login) {
	var l api.Login
	code, _ := c.do("", "POST", "/v1/login", `{"user": "`+user+`", "password": "`+password+`"}`, &l)
	return code, l
}

// Login, logout, expiry and revocation of sessions and API tokens, each
// refusal with a clear 401, and a wrong password answered as an unknown
// user is.
func TestLoginSessionsAndTokens(t *testing.T) {
	f := newAuthzFixture(t)
	c := newAuthCase(t, f)

	code, l := c.login("op", matrixPassword)
	if code != http.StatusOK || l.Token == "" || l.User != "op" {
		t.Fatalf("login: %d %+v", code, l)
	}
	var who api.Whoami
	if code, body := c.do(l.Token, "GET", "/v1/whoami", "", &who); code != 200 || who.User != "op" || len(who.Grants) != 1 || who.Grants[0].Role != "operator" {
		t.Errorf("whoami with the session: %d %s", code, body)
	}
	// Wrong password and unknown user: the same answer.
	_, wrong := c.do("", "POST", "/v1/login", `{"user": "op", "password": "not the password"}`, nil)
	_, unknown := c.do("", "POST", "/v1/login", `{"user": "ghost", "password": "not the password"}`, nil)
	if !strings.Contains(wrong, "wrong user name or password") || wrong != unknown {
		t.Errorf("wrong password answered %q, unknown user %q; want the same", wrong, unknown)
	}
	// A disabled user cannot log in, and its sessions stop working.
	if code, body := c.do(f.bearer["admin"], "PATCH", "/v1/users/op", `{"disabled": true}`, nil); code != 200 {
		t.Fatalf("disable: %d %s", code, body)
	}
	if code, _ := c.do(l.Token, "GET", "/v1/whoami", "", nil); code != http.StatusUnauthorized {
		t.Errorf("a disabled user's session: %d; want 401", code)
	}
	if code, _ := c.login("op", matrixPassword); code != http.StatusUnauthorized {
		t.Errorf("a disabled user's login: %d; want 401", code)
	}
	c.do(f.bearer["admin"], "PATCH", "/v1/users/op", `{"disabled": false}`, nil)

	// Logout ends the session.
	_, l = c.login("op", matrixPassword)
	if code, body := c.do(l.Token, "DELETE", "/v1/login", "", nil); code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", code, body)
	}
	if code, _ := c.do(l.Token, "GET", "/v1/whoami", "", nil); code != http.StatusUnauthorized {
		t.Errorf("after logout: %d; want 401", code)
	}

	// A session expires.
	_, l = c.login("op", matrixPassword)
	c.clock.Advance(DefaultSessionTTL)
	if code, body := c.do(l.Token, "GET", "/v1/whoami", "", nil); code != http.StatusUnauthorized || !strings.Contains(body, "session expired") {
		t.Errorf("an expired session: %d %s; want 401 saying it expired", code, body)
	}

	// An API token acts with its role alone, expires and can be revoked;
	// nobody grants more than it holds.
	_, l = c.login("op", matrixPassword)
	var tok api.APIToken
	if code, body := c.do(l.Token, "POST", "/v1/apitokens", `{"name": "ci", "role": "admin", "project": "alpha"}`, nil); code != http.StatusForbidden {
		t.Errorf("an operator minting an admin token: %d %s; want 403", code, body)
	}
	if code, body := c.do(l.Token, "POST", "/v1/apitokens", `{"name": "ci", "role": "viewer", "project": "alpha", "ttl": "1h"}`, &tok); code != http.StatusCreated {
		t.Fatalf("create API token: %d %s", code, body)
	}
	if code, _ := c.do(tok.Token, "GET", "/v1/projects/alpha/deployments", "", nil); code != 200 {
		t.Errorf("the viewer token reading its project: %d", code)
	}
	if code, _ := c.do(tok.Token, "DELETE", "/v1/projects/alpha/deployments/web", "", nil); code != http.StatusForbidden {
		t.Errorf("the viewer token deleting: %d; want 403", code)
	}
	tampered := tok.Token[:len(tok.Token)-1] + "a"
	if tampered == tok.Token {
		tampered = tok.Token[:len(tok.Token)-1] + "b"
	}
	if code, _ := c.do(tampered, "GET", "/v1/whoami", "", nil); code != http.StatusUnauthorized {
		t.Errorf("a tampered token: %d; want 401", code)
	}
	c.clock.Advance(time.Hour)
	if code, body := c.do(tok.Token, "GET", "/v1/whoami", "", nil); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("an expired API token: %d %s; want 401 saying it expired", code, body)
	}
	_, l = c.login("op", matrixPassword)
	c.do(l.Token, "POST", "/v1/apitokens", `{"name": "ci", "role": "viewer", "project": "alpha"}`, &tok)
	if code, _ := c.do(l.Token, "DELETE", "/v1/apitokens/"+tok.ID, "", nil); code != http.StatusNoContent {
		t.Errorf("revoke: %d", code)
	}
	if code, _ := c.do(tok.Token, "GET", "/v1/whoami", "", nil); code != http.StatusUnauthorized {
		t.Errorf("a revoked token: %d; want 401", code)
	}
	// A token is never listed with its secret.
	_, list := c.do(f.bearer["admin"], "GET", "/v1/apitokens?all=true", "", nil)
	if strings.Contains(list, tok.Token) || strings.Contains(list, l.Token) {
		t.Error("a token's secret is in the token list")
	}
}

// Bad input changes nothing and says what is wrong.
func TestAuthBadInput(t *testing.T) {
	f := newAuthzFixture(t)
	c := newAuthCase(t, f)
	admin := f.bearer["admin"]
	tests := []struct {
		method, path, body string
		status             int
		says               string
	}{
		{"POST", "/v1/roles", `{"name": "r", "permissions": ["deployments:reed"]}`, 400, `unknown permission "deployments:reed"`},
		{"POST", "/v1/roles", `{"name": "admin", "permissions": ["*"]}`, 400, "built in"},
		{"POST", "/v1/bindings", `{"subject": "user:op", "role": "viewer", "project": "nosuch"}`, 404, `project "nosuch" not found`},
		{"POST", "/v1/bindings", `{"subject": "user:op", "role": "nosuch", "project": "alpha"}`, 400, `role "nosuch" does not exist`},
		{"POST", "/v1/bindings", `{"subject": "team:op", "role": "viewer", "project": "alpha"}`, 400, "neither user:NAME nor group:NAME"},
		{"POST", "/v1/users", `{"name": "x", "password": "short"}`, 400, "at least 12"},
		{"POST", "/v1/users", `{"name": "Bad Name", "password": "` + matrixPassword + `"}`, 400, "user name"},
		{"POST", "/v1/apitokens", `{"name": "ci", "role": "viewer", "project": "alpha", "ttl": "10000h"}`, 400, "longer than an API token may live"},
		{"POST", "/v1/projects", `{"name": "Bad_Name"}`, 400, "name"},
		{"POST", "/v1/users", `{"name": "x", "password": "` + strings.Repeat("p", 2<<20) + `"}`, 400, "invalid request body"},
	}
	before, _ := c.st.ListAudit(context.Background(), store.AuditFilter{})
	for _, tt := range tests {
		code, body := c.do(admin, tt.method, tt.path, tt.body, nil)
		var e api.Error
		json.Unmarshal([]byte(body), &e)
		if code != tt.status || !strings.Contains(e.Error, tt.says) {
			t.Errorf("%s %s %.60s: %d %s; want %d saying %q", tt.method, tt.path, tt.body, code, body, tt.status, tt.says)
		}
	}
	// Nothing changed, and each refusal is in the audit log.
	if us, _ := c.st.ListUsers(context.Background()); len(us) != 3 {
		t.Errorf("%d users after refused creates; want the fixture's 3", len(us))
	}
	if rs, _ := c.st.ListRoles(context.Background()); len(rs) != 1 {
		t.Errorf("%d custom roles after refused creates; want the fixture's 1", len(rs))
	}
	after, _ := c.st.ListAudit(context.Background(), store.AuditFilter{})
	if len(after)-len(before) != len(tests) {
		t.Errorf("%d audit records for %d refused requests", len(after)-len(before), len(tests))
	}
	for _, r := range after[len(before):] {
		if r.Result == "ok" || !strings.HasPrefix(r.Actor, "token:") {
			t.Errorf("a refusal recorded as %+v", r)
		}
	}
}

// Every change is in the audit log, written with it; when the log cannot
// be written the request fails with 503 and changes nothing, and records
// and committed changes match one to one.
func TestAuditFailsClosed(t *testing.T) {
	f := newAuthzFixture(t)
	c := newAuthCase(t, f)
	ctx := context.Background()
	admin := f.bearer["admin"]
	if code, body := c.do(admin, "POST", "/v1/users", `{"name": "carol", "password": "`+matrixPassword+`"}`, nil); code != 201 {
		t.Fatalf("create user: %d %s", code, body)
	}
	recs, _ := c.st.ListAudit(ctx, store.AuditFilter{})
	last := recs[len(recs)-1]
	if last.Action != "POST /v1/users" || last.Target != "user:carol" || last.Result != "ok" || last.Source != "192.0.2.1" || last.RequestID == "" {
		t.Errorf("the create's record: %+v", last)
	}
	if strings.Contains(last.Target+last.Action, matrixPassword) {
		t.Error("the password is in the audit record")
	}

	// Make the audit log unwritable, as a full or broken audit table would
	// be, while the rest of the store stays writable.
	db := openRaw(t, c.st)
	if _, err := db.Exec(`CREATE TRIGGER audit_blocked BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit table unwritable'); END`); err != nil {
		t.Fatal(err)
	}
	writes := []struct{ method, path, body string }{
		{"POST", "/v1/users", `{"name": "dave", "password": "` + matrixPassword + `"}`},
		{"POST", "/v1/apply", fmt4(alphaWeb)},
		{"DELETE", "/v1/projects/beta/deployments/web", ""},
		{"POST", "/v1/login", `{"user": "op", "password": "` + matrixPassword + `"}`},
		{"POST", "/v1/login", `{"user": "op", "password": "wrong password!"}`},
		{"PATCH", "/v1/nodes/n1/labels", `{"set": {"zone": "z9"}}`},
	}
	for _, w := range writes {
		code, body := c.do(admin, w.method, w.path, w.body, nil)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "audit log") {
			t.Errorf("%s %s with the audit log unwritable: %d %s; want 503 naming the audit log", w.method, w.path, code, body)
		}
	}
	if _, _, err := c.st.GetUser(ctx, "dave"); err == nil {
		t.Error("a user was created without its audit record")
	}
	if _, err := c.st.GetDeployment(ctx, "beta", "web"); err != nil {
		t.Errorf("a deployment was deleted without its audit record: %v", err)
	}
	if d, _ := c.st.GetDeployment(ctx, "alpha", "web"); d.Revision != 2 {
		t.Errorf("alpha/web at revision %d; want 2, the apply refused", d.Revision)
	}
	if n, _ := c.st.GetNode(ctx, "0000000000000001"); n.Labels["zone"] != "" {
		t.Error("a node was labelled without its audit record")
	}
	// Reads go on.
	if code, _ := c.do(admin, "GET", "/v1/users", "", nil); code != 200 {
		t.Errorf("a read with the audit log unwritable: %d; want 200", code)
	}
	if _, err := db.Exec(`DROP TRIGGER audit_blocked`); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.do(admin, "POST", "/v1/users", `{"name": "dave", "password": "`+matrixPassword+`"}`, nil); code != 201 {
		t.Errorf("once the log is writable again: %d; want 201", code)
	}
	// One record per committed change: each user row has its create.
	recs, _ = c.st.ListAudit(ctx, store.AuditFilter{})
	created := map[string]int{}
	for _, r := range recs {
		if r.Action == "POST /v1/users" && r.Result == "ok" {
			created[r.Target]++
		}
	}
	if created["user:carol"] != 1 || created["user:dave"] != 1 || len(created) != 2 {
		t.Errorf("user creations recorded %v; want carol and dave once each", created)
	}
}

func fmt4(doc string) string { return strings.Replace(doc, "%d", "4", 1) }

// openRaw opens the SQLite file of st beside it, as an intruder with
// access to the disk would.
func openRaw(t *testing.T, st store.Store) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+st.(*store.SQLite).Path()+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// audit verify finds a record edited, one deleted, and one cut off the end.
func TestAuditVerifyFindsTampering(t *testing.T) {
	f := newAuthzFixture(t)
	admin := f.bearer["admin"]
	tests := []struct {
		name, sql, says string
	}{
		{"edited", `UPDATE audit SET actor = 'user:mallory' WHERE seq = 2`, "record 2: its hash does not match its content"},
		{"deleted", `DELETE FROM audit WHERE seq = 3`, "records 3 to 3 are missing"},
		{"cut off the end", `DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)`, "records at the end were removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newAuthCase(t, f)
			for _, u := range []string{"u1", "u2", "u3", "u4"} {
				c.do(admin, "POST", "/v1/users", `{"name": "`+u+`", "password": "`+matrixPassword+`"}`, nil)
			}
			var v api.AuditVerify
			if code, body := c.do(admin, "GET", "/v1/audit/verify", "", &v); code != 200 || !v.OK || v.Records < 4 {
				t.Fatalf("verify before tampering: %d %s", code, body)
			}
			if _, err := openRaw(t, c.st).Exec(tt.sql); err != nil {
				t.Fatal(err)
			}
			c.do(admin, "GET", "/v1/audit/verify", "", &v)
			if v.OK || !strings.Contains(strings.Join(v.Problems, "\n"), tt.says) {
				t.Errorf("verify after the record was %s: %+v; want a problem saying %q", tt.name, v, tt.says)
			}
		})
	}
}

// A verified client certificate authenticates its user, and a node's
// certificate, from the same CA, authenticates nobody.
func TestClientCertificates(t *testing.T) {
	f := newAuthzFixture(t)
	c := newAuthCase(t, f)
	ca, _, err := pki.LoadOrCreateCA(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	call := func(certPEM []byte) (int, string) {
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/v1/whoami", nil)
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	userCert, err := ca.SignUser(f.csr, "vw", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := call(userCert); code != 200 || !strings.Contains(body, `"user":"vw"`) || !strings.Contains(body, "viewer") {
		t.Errorf("whoami by vw's certificate: %d %s", code, body)
	}
	nodeCert, err := ca.SignNode(f.csr, "0000000000000001", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := call(nodeCert); code != http.StatusUnauthorized {
		t.Errorf("whoami by a node's certificate: %d; want 401", code)
	}
	ghost, _ := ca.SignUser(f.csr, "ghost", time.Hour)
	if code, _ := call(ghost); code != http.StatusUnauthorized {
		t.Errorf("a certificate of a user that does not exist: %d; want 401", code)
	}
}
