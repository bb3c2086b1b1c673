package restapi

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/passwd"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// The callers of the matrix, in its column order.
var matrixCallers = []string{"admin", "operator", "viewer", "nobody", "anonymous"}

// matrixRow is one line of testdata/authz_matrix.txt.
type matrixRow struct {
	line                  int
	method, path, project string
	want                  map[string]int
}

func (r matrixRow) route() string { return r.method + " " + r.path }

func loadMatrix(t *testing.T) []matrixRow {
	t.Helper()
	f, err := os.Open("testdata/authz_matrix.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []matrixRow
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3+len(matrixCallers) {
			t.Fatalf("authz_matrix.txt:%d: %d fields; want method, path, project and %d statuses", n, len(f), len(matrixCallers))
		}
		r := matrixRow{line: n, method: f[0], path: f[1], project: f[2], want: map[string]int{}}
		for i, c := range matrixCallers {
			code, err := strconv.Atoi(f[3+i])
			if err != nil {
				t.Fatalf("authz_matrix.txt:%d: status %q", n, f[3+i])
			}
			r.want[c] = code
		}
		rows = append(rows, r)
	}
	return rows
}

// Every endpoint the API serves has a row in the matrix, and every row is
// an endpoint: a new endpoint cannot be added without saying who may call it.
func TestAuthorizationMatrixCoversEveryRoute(t *testing.T) {
	h, _ := newTestHandler(t)
	rows := loadMatrix(t)
	inMatrix := map[string]bool{}
	for _, r := range rows {
		inMatrix[r.route()] = true
	}
	served := map[string]bool{}
	for _, rt := range h.Routes() {
		key := strings.TrimSpace(cmp.Or(rt.Method, "*") + " " + rt.Path)
		served[key] = true
		if !inMatrix[key] {
			t.Errorf("endpoint %s has no row in testdata/authz_matrix.txt: say who may call it", key)
		}
		if _, ok := matrixRequests[key]; !ok {
			t.Errorf("endpoint %s has no request in matrixRequests", key)
		}
	}
	for _, r := range rows {
		if !served[r.route()] {
			t.Errorf("authz_matrix.txt:%d: %s is not an endpoint the API serves", r.line, r.route())
		}
	}
}

// authzFixture is a store with two projects and their objects, users of
// each kind, and their credentials, saved as a template file that each
// cell of the matrix starts from.
type authzFixture struct {
	dir, template string
	ca            *pki.CA
	// bearer is each caller's credential; anonymous has none.
	bearer map[string]string
	// ids are the objects the requests name: the enrollment token, the
	// operator's API token, the viewer's binding.
	enrollToken, opToken, viewerBinding string
	// csr is a certificate signing request for a client key.
	csr []byte
}

const (
	matrixPassword = "correct horse battery staple"
	alphaWeb       = "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web, project: alpha}\nspec:\n  selector: {matchLabels: {team: a}}\n  container: {image: \"hello:v%d\"}\n"
	betaWeb        = "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web, project: beta}\nspec:\n  container: {image: \"hello:v%d\"}\n"
)

func newAuthzFixture(t *testing.T) *authzFixture {
	t.Helper()
	ctx := context.Background()
	f := &authzFixture{dir: t.TempDir(), bearer: map[string]string{}}
	f.template = filepath.Join(f.dir, "template.db")
	st, err := store.OpenSQLite(ctx, f.template)
	if err != nil {
		t.Fatal(err)
	}
	if f.ca, _, err = pki.LoadOrCreateCA(f.dir); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	key, err := pki.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if f.csr, err = pki.NewCSR(key); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	newToken := func(tok api.APIToken) string {
		secret, id, hash := pki.NewAPIToken()
		tok.ID, tok.CreatedAt = id, now
		must(st.CreateAPIToken(ctx, tok, hash))
		return secret
	}
	f.bearer["admin"] = newToken(api.APIToken{Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"})
	must(st.CreateProject(ctx, api.Project{Name: "alpha", NodeSelector: spec.Selector{MatchLabels: map[string]string{"team": "a"}}, CreatedAt: now}))
	must(st.CreateProject(ctx, api.Project{Name: "beta", CreatedAt: now}))
	must(st.CreateEnrollToken(ctx, api.EnrollToken{ID: "nodes", MaxUses: 2, CreatedAt: now}, "h"))
	for i, team := range []string{"a", "b"} {
		n := api.Node{ID: fmt.Sprintf("%016x", i+1), Name: fmt.Sprintf("n%d", i+1), Labels: map[string]string{"team": team},
			State: api.NodeReady, CreatedAt: now}
		_, err := st.Enroll(ctx, "nodes", func(api.EnrollToken, string, *api.Node) error { return nil }, n)
		must(err)
	}
	f.enrollToken = "et"
	must(st.CreateEnrollToken(ctx, api.EnrollToken{ID: f.enrollToken, MaxUses: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, "h"))
	hash := passwd.Hash(matrixPassword)
	for user, role := range map[string]string{"op": "operator", "vw": "viewer", "nb": ""} {
		must(st.CreateUser(ctx, api.User{Name: user, CreatedAt: now}, hash))
		if role != "" {
			b := api.Binding{ID: "b-" + user, Subject: "user:" + user, Role: role, Project: "alpha", CreatedAt: now}
			must(st.CreateBinding(ctx, b))
		}
	}
	f.viewerBinding = "b-vw"
	for caller, user := range map[string]string{"operator": "op", "viewer": "vw", "nobody": "nb"} {
		f.bearer[caller] = newToken(api.APIToken{Name: "session", Kind: api.TokenSession, Owner: user, ExpiresAt: now.Add(time.Hour)})
	}
	secret := newToken(api.APIToken{Name: "ci", Kind: api.TokenAPI, Owner: "op", Role: "viewer", Project: "alpha", ExpiresAt: now.Add(time.Hour)})
	f.opToken, _, _ = pki.ParseAPIToken(secret)
	must(st.PutRole(ctx, api.Role{Name: "deployer", Permissions: []string{"deployments:*"}, CreatedAt: now}, false))
	// Two revisions of a deployment in each project, applied as a user
	// would: a rollout runs to the second, and undo has one to go back to.
	h := newHandlerOn(t, st, f.ca, nil)
	for v := 1; v <= 2; v++ {
		for _, doc := range []string{alphaWeb, betaWeb} {
			if code, body := f.call(h, "admin", "POST", "/v1/apply", fmt.Sprintf(doc, v)); code != http.StatusOK {
				t.Fatalf("fixture apply: %d %s", code, body)
			}
		}
	}
	must(st.Close())
	return f
}

// call makes one request of caller to h.
func (f *authzFixture) call(h http.Handler, caller, method, path, body string) (int, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if tok := f.bearer[caller]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// fresh opens a copy of the template store and a handler on it.
func (f *authzFixture) fresh(t *testing.T) (*Handler, store.Store) {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(f.template)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dockfleet.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newHandlerOn(t, st, f.ca, nil), st
}

// matrixRequest is how the matrix calls an endpoint: its path with the
// parameters filled in for the own or other project, and its body.
type matrixRequest func(f *authzFixture, own bool) (path, body string)

// pick returns own's value in the own project, other's in the other.
func pick(own bool, mine, other string) string {
	if own {
		return mine
	}
	return other
}

func fixed(path, body string) matrixRequest {
	return func(*authzFixture, bool) (string, string) { return path, body }
}

func inProject(suffix, body string) matrixRequest {
	return func(_ *authzFixture, own bool) (string, string) {
		return "/v1/projects/" + pick(own, "alpha", "beta") + suffix, body
	}
}

func onNode(suffix, body string) matrixRequest {
	return func(_ *authzFixture, own bool) (string, string) {
		return "/v1/nodes/" + pick(own, "n1", "n2") + suffix, body
	}
}

var matrixRequests = map[string]matrixRequest{
	"GET /v1/health":     fixed("/v1/health", ""),
	"GET /v1/auth":       fixed("/v1/auth", ""),
	"POST /v1/login":     fixed("/v1/login", `{"user": "op", "password": "`+matrixPassword+`"}`),
	"DELETE /v1/login":   fixed("/v1/login", ""),
	"POST /v1/login/sso": fixed("/v1/login/sso", `{"idToken": "x"}`),
	"GET /v1/whoami":     fixed("/v1/whoami", ""),
	"POST /v1/whoami/certificate": func(f *authzFixture, _ bool) (string, string) {
		b, _ := json.Marshal(api.UserCertificateRequest{CSR: f.csr})
		return "/v1/whoami/certificate", string(b)
	},
	"POST /v1/whoami/password": fixed("/v1/whoami/password", `{"current": "`+matrixPassword+`", "new": "another long passphrase"}`),

	"GET /v1/nodes":                  fixed("/v1/nodes", ""),
	"GET /v1/nodes/{node}":           onNode("", ""),
	"PATCH /v1/nodes/{node}/labels":  onNode("/labels", `{"set": {"zone": "z1"}}`),
	"POST /v1/nodes/{node}/revoke":   onNode("/revoke", ""),
	"DELETE /v1/nodes/{node}":        onNode("", ""),
	"POST /v1/nodes/{node}/cordon":   onNode("/cordon", ""),
	"POST /v1/nodes/{node}/drain":    onNode("/drain", ""),
	"POST /v1/nodes/{node}/uncordon": onNode("/uncordon", ""),
	"POST /v1/tokens":                fixed("/v1/tokens", `{}`),
	"GET /v1/tokens":                 fixed("/v1/tokens", ""),
	"DELETE /v1/tokens/{id}":         func(f *authzFixture, _ bool) (string, string) { return "/v1/tokens/" + f.enrollToken, "" },
	"POST /v1/apply": func(_ *authzFixture, own bool) (string, string) {
		return "/v1/apply", fmt.Sprintf(pick(own, alphaWeb, betaWeb), 3)
	},
	"GET /v1/projects":                                                fixed("/v1/projects", ""),
	"POST /v1/projects":                                               fixed("/v1/projects", `{"name": "gamma"}`),
	"GET /v1/projects/{project}":                                      inProject("", ""),
	"DELETE /v1/projects/{project}":                                   inProject("", ""),
	"GET /v1/projects/{project}/deployments":                          inProject("/deployments", ""),
	"GET /v1/projects/{project}/deployments/{name}":                   inProject("/deployments/web", ""),
	"DELETE /v1/projects/{project}/deployments/{name}":                inProject("/deployments/web", ""),
	"GET /v1/projects/{project}/instances":                            inProject("/instances", ""),
	"GET /v1/projects/{project}/deployments/{name}/revisions":         inProject("/deployments/web/revisions", ""),
	"GET /v1/projects/{project}/deployments/{name}/rollout":           inProject("/deployments/web/rollout", ""),
	"POST /v1/projects/{project}/deployments/{name}/rollout/undo":     inProject("/deployments/web/rollout/undo", `{"toRevision": 1}`),
	"POST /v1/projects/{project}/deployments/{name}/rollout/{action}": inProject("/deployments/web/rollout/pause", ""),
	"GET /v1/projects/{project}/events":                               inProject("/events", ""),

	"GET /v1/users":           fixed("/v1/users", ""),
	"POST /v1/users":          fixed("/v1/users", `{"name": "newbie", "password": "`+matrixPassword+`"}`),
	"GET /v1/users/{user}":    fixed("/v1/users/nb", ""),
	"PATCH /v1/users/{user}":  fixed("/v1/users/nb", `{"disabled": true}`),
	"DELETE /v1/users/{user}": fixed("/v1/users/nb", ""),
	"GET /v1/apitokens":       fixed("/v1/apitokens", ""),
	"POST /v1/apitokens": func(_ *authzFixture, own bool) (string, string) {
		return "/v1/apitokens", `{"name": "ci2", "role": "viewer", "project": "` + pick(own, "alpha", "beta") + `"}`
	},
	"DELETE /v1/apitokens/{id}": func(f *authzFixture, _ bool) (string, string) { return "/v1/apitokens/" + f.opToken, "" },
	"GET /v1/roles":             fixed("/v1/roles", ""),
	"POST /v1/roles":            fixed("/v1/roles", `{"name": "reader", "permissions": ["deployments:read"]}`),
	"PUT /v1/roles/{role}":      fixed("/v1/roles/deployer", `{"permissions": ["deployments:read"]}`),
	"DELETE /v1/roles/{role}":   fixed("/v1/roles/deployer", ""),
	"GET /v1/bindings":          fixed("/v1/bindings", ""),
	"POST /v1/bindings": func(_ *authzFixture, own bool) (string, string) {
		return "/v1/bindings", `{"subject": "user:nb", "role": "viewer", "project": "` + pick(own, "alpha", "beta") + `"}`
	},
	"DELETE /v1/bindings/{id}":      func(f *authzFixture, _ bool) (string, string) { return "/v1/bindings/" + f.viewerBinding, "" },
	"GET /v1/audit":                 fixed("/v1/audit", ""),
	"GET /v1/audit/verify":          fixed("/v1/audit/verify", ""),
	"POST /v1/store/accept-restore": fixed("/v1/store/accept-restore", ""),
	"GET /v1/ca":                    fixed("/v1/ca", ""),
	"POST /v1/ca/rotate":            fixed("/v1/ca/rotate", ""),
	"POST /v1/ca/finish":            fixed("/v1/ca/finish", ""),
	"* /":                           fixed("/v1/no-such-endpoint", ""),
}

// TestAuthorizationMatrix runs every cell of the matrix, each on a fresh
// copy of the fixture's store, and requires every status to match.
func TestAuthorizationMatrix(t *testing.T) {
	f := newAuthzFixture(t)
	rows := loadMatrix(t)
	cells, failed := 0, 0
	for _, r := range rows {
		req, ok := matrixRequests[r.route()]
		if !ok {
			t.Errorf("authz_matrix.txt:%d: no request for %s", r.line, r.route())
			continue
		}
		path, body := req(f, r.project != "other")
		method := r.method
		if method == "*" {
			method = http.MethodGet
		}
		for _, caller := range matrixCallers {
			h, _ := f.fresh(t)
			code, answer := f.call(h, caller, method, path, body)
			cells++
			if code != r.want[caller] {
				failed++
				t.Errorf("authz_matrix.txt:%d: %s %s (%s project) as %s: %d %s; want %d",
					r.line, method, path, r.project, caller, code, strings.TrimSpace(answer), r.want[caller])
			}
		}
	}
	t.Logf("%d cells, %d mismatched", cells, failed)
}
