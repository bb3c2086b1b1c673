package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/debugsrv"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// The server's own tests make their servers here: they reach private
// fields, so they cannot use internal/servertest, which imports server.

// testConfig is cfg for a server under test: in a new temporary data dir
// and on loopback ports unless cfg names them, and asking no registry
// unless cfg has a resolver of its own.
func testConfig(t testing.TB, cfg Config) Config {
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:0"
	}
	if cfg.AgentAddr == "" {
		cfg.AgentAddr = "127.0.0.1:0"
	}
	if cfg.Resolve == nil {
		cfg.Resolve = testenv.NoRegistry
	}
	return cfg
}

// newTestServer makes a server (listeners bound, not served) and returns
// it with its admin token; the test's cleanup closes it.
func newTestServer(t testing.TB) (*Server, string) {
	t.Helper()
	return newTestServerConfig(t, Config{})
}

// newTestServerConfig is newTestServer with testConfig(cfg).
func newTestServerConfig(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	s, err := New(context.Background(), testConfig(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the server: %v", err)
		}
	})
	tok, err := os.ReadFile(s.AdminTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(s.AdminTokenFile()); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode = %v, %v; want 0600", info.Mode().Perm(), err)
	}
	return s, strings.TrimSpace(string(tok))
}

// runTestServer runs s until the test ends; the test's cleanup stops it
// and waits until Run has returned.
func runTestServer(t testing.TB, s *Server) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
}

func call(t testing.TB, h http.Handler, token, method, path, body string) (int, api.Error) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e api.Error
	if rec.Code >= 400 {
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Errorf("%s %s: error body is not JSON: %q", method, path, rec.Body)
		}
	}
	return rec.Code, e
}

const goodSpec = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: hello:v1}
`

func TestAPIErrors(t *testing.T) {
	s, tok := newTestServer(t)
	h := s.api
	tests := []struct {
		name, token, method, path, body string
		status                          int
		want                            string
	}{
		{"no token", "", "GET", "/v1/nodes", "", 401, "missing or invalid credential"},
		{"wrong token", "dfa1-aaaaaaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbbbb", "GET", "/v1/nodes", "", 401, "missing or invalid credential"},
		{"health needs no token", "", "GET", "/v1/health", "", 200, ""},
		{"unknown endpoint", tok, "GET", "/v1/nope", "", 404, "no API endpoint GET /v1/nope"},
		{"unknown node", tok, "GET", "/v1/nodes/ghost", "", 404, `no node with ID or name "ghost"`},
		{"label unknown node", tok, "PATCH", "/v1/nodes/ghost/labels", `{"set":{"a":"b"}}`, 404, "ghost"},
		{"bad label key", tok, "PATCH", "/v1/nodes/ghost/labels", `{"set":{"-a":"b"}}`, 400, `label "-a"`},
		{"unknown body field", tok, "POST", "/v1/tokens", `{"ttl":"1h","colour":"red"}`, 400, `unknown field "colour"`},
		{"bad ttl", tok, "POST", "/v1/tokens", `{"ttl":"soon"}`, 400, `ttl: "soon" is not a positive duration`},
		{"negative uses", tok, "POST", "/v1/tokens", `{"uses":-1}`, 400, "uses: -1 is negative"},
		{"token for a century", tok, "POST", "/v1/tokens", `{"ttl":"876000h"}`, 400, "ttl: 876000h is longer than this server allows for an enrollment token (720h0m0s, its --max-token-ttl)"},
		{"bad token label", tok, "POST", "/v1/tokens", `{"labels":{"a b":"c"}}`, 400, `labels: "a b"`},
		{"revoke unknown token", tok, "DELETE", "/v1/tokens/nope", "", 404, `no enrollment token "nope"`},
		{"unknown deployment", tok, "GET", "/v1/projects/default/deployments/nope", "", 404, `no deployment "nope" in project "default"`},
		{"delete unknown deployment", tok, "DELETE", "/v1/projects/default/deployments/nope", "", 404, `no deployment "nope"`},
		{"invalid spec", tok, "POST", "/v1/apply?filename=x.yaml", "kind: Deployment\n", 400, "invalid spec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, e := call(t, h, tc.token, tc.method, tc.path, tc.body)
			if code != tc.status || !strings.Contains(e.Error, tc.want) {
				t.Errorf("%s %s = %d %q; want %d containing %q", tc.method, tc.path, code, e.Error, tc.status, tc.want)
			}
		})
	}
}

// A refused request is in the server's log, for the operator, but a
// client sending many cannot flood it.
func TestRefusalsAreLoggedSparsely(t *testing.T) {
	var logs testenv.Buffer
	s, _ := newTestServerConfig(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for range 100 {
		call(t, s.api, "", "POST", "/v1/tokens", `{}`)
	}
	if n := strings.Count(logs.String(), "api request refused"); n != 1 {
		t.Errorf("100 refused requests logged %d times; want once (then counted):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "status=401") || !strings.Contains(logs.String(), "path=/v1/tokens") {
		t.Errorf("the log does not say what was refused and why:\n%s", logs.String())
	}
}

// A 401 says how to authenticate (RFC 9110 §11.6.1), so that generic HTTP
// clients and proxies know a bearer token is wanted.
func TestUnauthorizedSaysBearer(t *testing.T) {
	s, _ := newTestServer(t)
	for _, auth := range []string{"", "Bearer nope", "Basic YTpi"} {
		req := httptest.NewRequest("GET", "/v1/nodes", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.api.ServeHTTP(rec, req)
		if got := rec.Header().Get("WWW-Authenticate"); rec.Code != 401 || got != `Bearer realm="dockfleet"` {
			t.Errorf("Authorization %q: %d, WWW-Authenticate %q; want 401 with Bearer realm=\"dockfleet\"", auth, rec.Code, got)
		}
	}
}

// Tokens default to one use within the hour (security review, finding 11:
// they never expired and had unlimited uses).
func TestEnrollTokenDefaults(t *testing.T) {
	s, _ := newTestServer(t)
	before := time.Now()
	tok, err := s.CreateEnrollToken(context.Background(), api.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if tok.MaxUses != 1 {
		t.Errorf("max uses %d; want 1", tok.MaxUses)
	}
	if tok.ExpiresAt.Before(before.Add(time.Hour-time.Second)) || tok.ExpiresAt.After(time.Now().Add(time.Hour)) {
		t.Errorf("expires at %v; want an hour from %v", tok.ExpiresAt, before)
	}
	if _, err := s.CreateEnrollToken(context.Background(), api.TokenRequest{TTL: "720h", Uses: 500}); err != nil {
		t.Errorf("a token for the longest TTL allowed: %v", err)
	}
}

func TestApplyReportsEveryProblemAndStoresNothing(t *testing.T) {
	s, tok := newTestServer(t)
	h := s.api
	bad := goodSpec + "---\napiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: Two}\nspec:\n  mode: sideways\n  container: {}\n"
	code, e := call(t, h, tok, "POST", "/v1/apply?filename=app.yaml", bad)
	want := []string{
		"app.yaml:9: metadata.name: ",
		"app.yaml:11: spec.mode: ",
		"app.yaml:12: spec.container.image: ",
	}
	if code != 400 || len(e.Details) != len(want) {
		t.Fatalf("apply = %d %+v; want 400 with %d details", code, e, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(e.Details[i], w) {
			t.Errorf("detail %d = %q; want it to start %q", i, e.Details[i], w)
		}
	}
	if ds, _ := s.store.ListDeployments(context.Background(), ""); len(ds) != 0 {
		t.Errorf("a refused apply stored %d deployments; want none (the valid document too must wait)", len(ds))
	}
}

func TestApplyRevisions(t *testing.T) {
	s, tok := newTestServer(t)
	h := s.api
	apply := func(body string) api.ApplyResult {
		t.Helper()
		req := httptest.NewRequest("POST", "/v1/apply?filename=web.yaml", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var resp api.ApplyResponse
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &resp) != nil || len(resp.Results) != 1 {
			t.Fatalf("apply = %d %s", rec.Code, rec.Body)
		}
		return resp.Results[0]
	}
	steps := []struct {
		body     string
		action   string
		revision int64
	}{
		{goodSpec, api.ActionCreated, 1},
		{goodSpec, api.ActionUnchanged, 1},
		{strings.Replace(goodSpec, "hello:v1", "hello:v2", 1), api.ActionConfigured, 2},
		{strings.Replace(goodSpec, "hello:v1", "hello:v2", 1), api.ActionUnchanged, 2},
	}
	for i, st := range steps {
		if got := apply(st.body); got.Action != st.action || got.Revision != st.revision {
			t.Errorf("apply %d = %s revision %d; want %s revision %d", i, got.Action, got.Revision, st.action, st.revision)
		}
	}
}

// FuzzAPI sends arbitrary requests through every route: none may panic or
// make the server answer 500, and every error body is JSON.
func FuzzAPI(f *testing.F) {
	s, tok := newTestServer(f)
	h := s.api
	f.Add("POST", "/v1/apply?filename=a.yaml", goodSpec)
	f.Add("POST", "/v1/tokens", `{"ttl":"1h","uses":2,"labels":{"a":"b"}}`)
	f.Add("PATCH", "/v1/nodes/x/labels", `{"set":{"a":"b"},"remove":["c"]}`)
	f.Add("GET", "/v1/projects/default/instances?deployment=web", "")
	f.Add("DELETE", "/v1/projects/default/deployments/web", "")
	f.Fuzz(func(t *testing.T, method, path, body string) {
		switch method {
		case "GET", "POST", "PATCH", "DELETE", "PUT":
		default:
			method = "POST"
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") {
			path = "/v1/apply"
		}
		req, err := http.NewRequest(method, "https://localhost"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: error body is not JSON: %q", method, path, rec.Body)
		}
	})
}

// TestRolloutBadRequests: each request is refused with a status and a
// message that says why. Every case starts from a fresh server, brought to
// the state it needs by setup requests that must succeed, so a failing case
// fails alone.
func TestRolloutBadRequests(t *testing.T) {
	const actions = "/v1/projects/default/deployments/web/rollout/"
	canary := `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: hello:v1}
  update: {canary: 3}
`
	// Setup steps: "apply" applies goodSpec (a rollout to revision 1 on no
	// node, which no controller steps here); any other is a rollout action.
	applied, paused, aborted := []string{"apply"}, []string{"apply", "pause"}, []string{"apply", "abort"}
	tests := []struct {
		name               string
		setup              []string
		method, path, body string
		status             int
		want               string
	}{
		{"promote without a rollout", nil, "POST", actions + "promote", "", 409, `deployment "web" in project "default" has no rollout to promote`},
		{"undo of an unknown deployment", nil, "POST", actions + "undo", `{"toRevision":1}`, 404, `no deployment "web"`},
		{"canary larger than the targets", nil, "POST", "/v1/apply?filename=web.yaml", canary, 400,
			"web.yaml: deployment web: spec.update.canary: 3 is more than the 0 nodes it targets"},
		{"undo to a revision that does not exist", applied, "POST", actions + "undo", `{"toRevision":7}`, 404, `deployment "web" has no revision 7 (it has 1 to 1)`},
		{"undo with nothing before", applied, "POST", actions + "undo", "", 409, "no revision before its stable revision 0"},
		{"negative undo", applied, "POST", actions + "undo", `{"toRevision":-1}`, 400, "toRevision: -1 is negative"},
		{"promote with no canary", applied, "POST", actions + "promote", "", 409, "has no canary awaiting promotion (state running"},
		{"resume a running rollout", applied, "POST", actions + "resume", "", 409, "is running, not paused: nothing to resume"},
		{"unknown action", applied, "POST", actions + "frobnicate", "", 404, `no rollout action "frobnicate"`},
		{"pause twice", paused, "POST", actions + "pause", "", 409, "is paused, not running: nothing to pause"},
		{"abort twice", aborted, "POST", actions + "abort", "", 409, "already ended (aborted): nothing to abort"},
		{"resume an aborted rollout", aborted, "POST", actions + "resume", "", 409, "is aborted, not paused: nothing to resume"},
		{"bad event wait", nil, "GET", "/v1/projects/default/events?wait=forever", "", 400, `wait: "forever" is not a duration`},
		{"bad event after", nil, "GET", "/v1/projects/default/events?after=x", "", 400, `after: "x" is not a sequence number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, tok := newTestServer(t)
			h := s.api
			for _, step := range tc.setup {
				path, body := actions+step, ""
				if step == "apply" {
					path, body = "/v1/apply?filename=web.yaml", goodSpec
				}
				if code, e := call(t, h, tok, "POST", path, body); code != http.StatusOK {
					t.Fatalf("setup %q: POST %s = %d %q; want 200", step, path, code, e.Error)
				}
			}
			code, e := call(t, h, tok, tc.method, tc.path, tc.body)
			if code != tc.status || !strings.Contains(e.Error, tc.want) {
				t.Errorf("%s %s = %d %q; want %d containing %q", tc.method, tc.path, code, e.Error, tc.status, tc.want)
			}
			// A refused request stores nothing: only the setup's apply made a deployment.
			want := 0
			if len(tc.setup) > 0 {
				want = 1
			}
			if ds, err := s.store.ListDeployments(context.Background(), ""); err != nil || len(ds) != want {
				t.Errorf("%d deployments stored (%v); want %d", len(ds), err, want)
			}
		})
	}
}

func TestDebugListenerIsLoopbackUnlessForced(t *testing.T) {
	_, err := New(context.Background(), testConfig(t, Config{DebugAddr: ":0"}))
	if !errors.Is(err, debugsrv.ErrNotLoopback) {
		t.Fatalf("New with --debug-addr :0 = %v; want it refused as not loopback", err)
	}
	newTestServerConfig(t, Config{DebugAddr: ":0", DebugAllowRemote: true})
}

func TestDebugListenerServesProfiles(t *testing.T) {
	s, _ := newTestServerConfig(t, Config{DebugAddr: "127.0.0.1:0"})
	runTestServer(t, s)
	resp, err := http.Get("http://" + s.debugLn.Addr().String() + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Errorf("GET /debug/pprof/heap = %d %.80q; want a heap profile", resp.StatusCode, body)
	}
}
