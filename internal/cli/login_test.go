package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/oidctest"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
)

// A new user's first steps against a real server: an admin creates the
// user and gives it a role; the user logs in, the session is kept in its
// config dir for the commands that follow, the role holds, and logout
// ends it. The audit log shows each step, whole.
func TestLoginAndRoles(t *testing.T) {
	srv := servertest.Start(t, nil)
	config := t.TempDir()
	admin := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, envToken: srv.AdminToken}
	user := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, "DOCKFLEET_CONFIG_DIR": config}
	must := func(r result, what string) result {
		t.Helper()
		if r.code != exitOK {
			t.Fatalf("%s: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
		}
		return r
	}
	const pw = "a passphrase long enough"
	must(runCLI(t, admin, pw+"\n", "user", "create", "alice", "--password-stdin"), "user create")
	must(runCLI(t, admin, "", "binding", "create", "--user", "alice", "--role", "operator", "--project", "default"), "binding create")

	if r := runCLI(t, user, "not the password\n", "login", "--user", "alice", "--password-stdin"); r.code != exitFailure || !strings.Contains(r.stderr, "wrong user name or password") {
		t.Errorf("login with a wrong password: exit %d %s", r.code, r.stderr)
	}
	r := must(runCLI(t, user, pw+"\n", "login", "--user", "alice", "--password-stdin"), "login")
	if !strings.Contains(r.stdout, "Logged in to "+srv.Client.Addr()+" as alice") {
		t.Errorf("login said %q", r.stdout)
	}
	creds := filepath.Join(config, credentialsFile)
	fi, err := os.Stat(creds)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v; want mode 0600", fi, err)
	}
	r = must(runCLI(t, user, "", "whoami"), "whoami")
	if !strings.Contains(r.stdout, "user alice") || !strings.Contains(r.stdout, "operator") {
		t.Errorf("whoami: %q", r.stdout)
	}
	must(runCLI(t, user, migrateSpec, "apply", "-f", "-"), "apply as an operator")
	if r := runCLI(t, user, "", "project", "create", "staging"); r.code != exitFailure || !strings.Contains(r.stderr, "may not") {
		t.Errorf("project create as an operator: exit %d %s; want a refusal", r.code, r.stderr)
	}
	if r := runCLI(t, user, migrateSpec, "apply", "-f", "-", "--project", "staging"); r.code != exitFailure || !strings.Contains(r.stderr, `project "staging" not found`) {
		t.Errorf("apply to a project that does not exist: exit %d %s", r.code, r.stderr)
	}
	r = must(runCLI(t, user, "", "apitoken", "create", "ci", "--role", "viewer", "--project", "default"), "apitoken create")
	ciToken := strings.TrimSpace(r.stdout)
	ci := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, envToken: ciToken, "DOCKFLEET_CONFIG_DIR": t.TempDir()}
	must(runCLI(t, ci, "", "get", "deployments"), "get deployments with the viewer token")
	if r := runCLI(t, ci, "", "delete", "deployment", "web"); r.code != exitFailure || !strings.Contains(r.stderr, "deployments:delete") {
		t.Errorf("delete with a viewer token: exit %d %s", r.code, r.stderr)
	}

	must(runCLI(t, user, "", "logout"), "logout")
	var saved sessions
	b, _ := os.ReadFile(creds)
	if err := json.Unmarshal(b, &saved); err != nil || len(saved.Servers) != 0 {
		t.Errorf("credentials after logout: %s %v; want no session", b, err)
	}
	if r := runCLI(t, user, "", "whoami"); r.code != exitFailure || !strings.Contains(r.stderr, "dockfleet login") {
		t.Errorf("whoami after logout: exit %d %s; want a 401 with the login hint", r.code, r.stderr)
	}

	r = must(runCLI(t, admin, "", "audit", "-o", "json"), "audit")
	var recs []api.AuditRecord
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, rec := range recs {
		seen = append(seen, rec.Actor+" "+rec.Action+" "+rec.Result)
	}
	all := strings.Join(seen, "\n")
	for _, want := range []string{"POST /v1/users ok", "user:alice POST /v1/login 401", "user:alice POST /v1/login ok",
		"user:alice POST /v1/apply ok", "user:alice POST /v1/projects 403", "user:alice DELETE /v1/login ok"} {
		if !strings.Contains(all, want) {
			t.Errorf("the audit log has no record %q:\n%s", want, all)
		}
	}
	if strings.Contains(r.stdout, pw) || strings.Contains(r.stdout, ciToken) {
		t.Error("a password or token is in the audit log")
	}
	if r := must(runCLI(t, admin, "", "audit", "verify"), "audit verify"); !strings.Contains(r.stdout, "whole") {
		t.Errorf("audit verify: %q", r.stdout)
	}
}

// dockfleet login --sso against a real OpenID provider: the device code
// is shown, approved at the provider, and the session acts with the
// bindings of the user's groups.
func TestLoginSSO(t *testing.T) {
	p := oidctest.Start(t, oidctest.WithAutoApprove("bob"))
	srv := servertest.Start(t, func(cfg *server.Config) {
		cfg.OIDC = oidcauth.Config{Issuer: p.Issuer(), ClientID: p.ClientID()}
		cfg.OIDCClient = p.Client()
	})
	if _, err := srv.Client.CreateBinding(t.Context(), api.Binding{Subject: "group:dev", Role: "viewer", Project: "default"}); err != nil {
		t.Fatal(err)
	}
	idpCA := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(idpCA, p.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, "DOCKFLEET_CONFIG_DIR": t.TempDir()}
	r := runCLI(t, vars, "", "login", "--sso", "--sso-ca-cert", idpCA)
	if r.code != exitOK || !strings.Contains(r.stderr, "enter the code") || !strings.Contains(r.stdout, "as bob") {
		t.Fatalf("login --sso: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, vars, "", "whoami")
	if r.code != exitOK || !strings.Contains(r.stdout, "user bob") || !strings.Contains(r.stdout, "viewer") {
		t.Errorf("whoami after SSO: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, vars, "", "login", "--sso"); r.code != exitFailure {
		t.Errorf("login --sso without trusting the provider: exit %d; want a failure", r.code)
	}
}

// A user's client certificate authenticates API requests instead of a
// token (mutual TLS), with the user's roles, until the user is disabled; a
// node's certificate, from the same CA, authenticates nothing.
func TestClientCertificateLogin(t *testing.T) {
	srv := servertest.Start(t, nil)
	admin := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, envToken: srv.AdminToken}
	user := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, "DOCKFLEET_CONFIG_DIR": t.TempDir()}
	const pw = "a passphrase long enough"
	for _, args := range [][]string{
		{"user", "create", "carol", "--password-stdin"},
		{"binding", "create", "--user", "carol", "--role", "viewer", "--project", "default"},
	} {
		if r := runCLI(t, admin, pw+"\n", args...); r.code != exitOK {
			t.Fatalf("%v: %s%s", args, r.stdout, r.stderr)
		}
	}
	if r := runCLI(t, user, pw+"\n", "login", "--user", "carol", "--password-stdin"); r.code != exitOK {
		t.Fatalf("login: %s", r.stderr)
	}
	dir := filepath.Join(t.TempDir(), "certs")
	if r := runCLI(t, user, "", "user", "cert", "--out-dir", dir); r.code != exitOK {
		t.Fatalf("user cert: %s%s", r.stdout, r.stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "user.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("user.key: %v %v; want mode 0600", fi, err)
	}
	runCLI(t, user, "", "logout")
	byCert := map[string]string{envAddr: srv.Client.Addr(), envCACert: srv.CAFile, "DOCKFLEET_CONFIG_DIR": t.TempDir(),
		envCert: filepath.Join(dir, "user.crt"), envKey: filepath.Join(dir, "user.key")}
	r := runCLI(t, byCert, "", "whoami")
	if r.code != exitOK || !strings.Contains(r.stdout, "user carol") || !strings.Contains(r.stdout, "viewer") {
		t.Fatalf("whoami by certificate: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, byCert, "", "project", "create", "x"); r.code != exitFailure || !strings.Contains(r.stderr, "may not") {
		t.Errorf("a viewer's certificate creating a project: exit %d %s", r.code, r.stderr)
	}
	if r := runCLI(t, admin, "", "user", "disable", "carol"); r.code != exitOK {
		t.Fatal(r.stderr)
	}
	if r := runCLI(t, byCert, "", "whoami"); r.code != exitFailure || !strings.Contains(r.stderr, "disabled") {
		t.Errorf("a disabled user's certificate: exit %d %s", r.code, r.stderr)
	}
}
