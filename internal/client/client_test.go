package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

const testToken = "secret-token"

// recorded is what the test server saw of one request.
type recorded struct {
	Method, Path, RawPath, Query, Auth, ContentType, Body string
}

// newServer starts a TLS server that answers every request with h and
// records it, and a Client that trusts it.
func newServer(t *testing.T, h http.HandlerFunc) (*Client, *[]recorded) {
	t.Helper()
	var (
		mu   sync.Mutex
		reqs []recorded
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		reqs = append(reqs, recorded{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"), Body: string(body),
		})
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Addr: srv.URL, Token: testToken, CAPEM: caPEM(srv)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c, &reqs
}

func caPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestCalls(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	node := api.Node{ID: "n1", Name: "web-1", Labels: map[string]string{"role": "web"}, State: api.NodeReady, LastSeen: t0}
	dep := api.Deployment{Project: "default", Name: "hello", Revision: 2, CreatedAt: t0}
	inst := api.Instance{ID: "i1", Project: "default", Deployment: "hello", NodeID: "n1", NodeName: "web-1", State: api.InstanceHealthy}
	tok := api.EnrollToken{ID: "t1", MaxUses: 3, Token: "dft_abc"}
	rev := api.Revision{Project: "default", Deployment: "hello", Number: 2, ImageDigest: "hello@sha256:0123", Cause: "apply", CreatedAt: t0}
	ro := api.Rollout{ID: "ab12cd", Project: "default", Deployment: "hello", From: 1, To: 2, State: api.RolloutRunning,
		Phase: api.PhaseBatches, Batch: 1, Batches: 2, Total: 4, Updated: 2, Healthy: 1, CreatedAt: t0, UpdatedAt: t0}
	undone := api.ApplyResult{Project: "default", Name: "hello", Action: api.ActionConfigured, Revision: 3, Rollout: "ef34ab"}
	ev := api.Event{Seq: 8, Time: t0, Project: "default", Deployment: "hello", Rollout: "ab12cd", Type: "batch.started", Message: "batch 1 of 2"}

	tests := []struct {
		name   string
		call   func(context.Context, *Client) (any, error)
		answer any
		status int
		want   any
		req    recorded
	}{
		{
			name:   "health",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.Health(ctx) },
			answer: map[string]string{"status": "ok"},
			req:    recorded{Method: "GET", Path: "/v1/health"},
		},
		{
			name:   "list nodes",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListNodes(ctx) },
			answer: []api.Node{node},
			want:   []api.Node{node},
			req:    recorded{Method: "GET", Path: "/v1/nodes"},
		},
		{
			name:   "list nodes empty is not nil",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListNodes(ctx) },
			answer: nil,
			want:   []api.Node{},
			req:    recorded{Method: "GET", Path: "/v1/nodes"},
		},
		{
			name:   "get node escapes its name",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetNode(ctx, "a/b c") },
			answer: node,
			want:   node,
			req:    recorded{Method: "GET", Path: "/v1/nodes/a/b c", RawPath: "/v1/nodes/a%2Fb%20c"},
		},
		{
			name: "patch node labels",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.PatchNodeLabels(ctx, "web-1", api.LabelPatch{Set: map[string]string{"zone": "a"}, Remove: []string{"old"}})
			},
			answer: node,
			want:   node,
			req: recorded{Method: "PATCH", Path: "/v1/nodes/web-1/labels", ContentType: "application/json",
				Body: `{"set":{"zone":"a"},"remove":["old"]}`},
		},
		{
			name: "create token",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 3})
			},
			answer: tok,
			want:   tok,
			req:    recorded{Method: "POST", Path: "/v1/tokens", ContentType: "application/json", Body: `{"ttl":"1h","uses":3}`},
		},
		{
			name:   "list tokens",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListTokens(ctx) },
			answer: []api.EnrollToken{tok},
			want:   []api.EnrollToken{tok},
			req:    recorded{Method: "GET", Path: "/v1/tokens"},
		},
		{
			name:   "revoke token",
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.RevokeToken(ctx, "t1") },
			status: http.StatusNoContent,
			req:    recorded{Method: "DELETE", Path: "/v1/tokens/t1"},
		},
		{
			name: "apply",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Apply(ctx, "dir/hello.yaml", "", []byte("kind: Deployment\n"))
			},
			answer: api.ApplyResponse{Results: []api.ApplyResult{{Project: "default", Name: "hello", Action: "created", Revision: 1}}},
			want:   api.ApplyResponse{Results: []api.ApplyResult{{Project: "default", Name: "hello", Action: "created", Revision: 1}}},
			req: recorded{Method: "POST", Path: "/v1/apply", Query: "filename=dir%2Fhello.yaml",
				ContentType: "application/yaml", Body: "kind: Deployment"},
		},
		{
			name:   "list deployments",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListDeployments(ctx, "ops") },
			answer: []api.Deployment{dep},
			want:   []api.Deployment{dep},
			req:    recorded{Method: "GET", Path: "/v1/projects/ops/deployments"},
		},
		{
			name:   "get deployment",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetDeployment(ctx, "default", "hello") },
			answer: api.DeploymentStatus{Deployment: dep, Instances: []api.Instance{inst}},
			want:   api.DeploymentStatus{Deployment: dep, Instances: []api.Instance{inst}},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/deployments/hello"},
		},
		{
			name: "delete deployment",
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.DeleteDeployment(ctx, "default", "hello")
			},
			status: http.StatusNoContent,
			req:    recorded{Method: "DELETE", Path: "/v1/projects/default/deployments/hello"},
		},
		{
			name:   "list instances of a deployment",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListInstances(ctx, "default", "hello") },
			answer: []api.Instance{inst},
			want:   []api.Instance{inst},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/instances", Query: "deployment=hello"},
		},
		{
			name:   "list all instances",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListInstances(ctx, "default", "") },
			answer: []api.Instance{inst},
			want:   []api.Instance{inst},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/instances"},
		},
		{
			name:   "list revisions",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListRevisions(ctx, "default", "hello") },
			answer: []api.Revision{rev},
			want:   []api.Revision{rev},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/deployments/hello/revisions"},
		},
		{
			name:   "list revisions empty is not nil",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListRevisions(ctx, "default", "hello") },
			answer: nil,
			want:   []api.Revision{},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/deployments/hello/revisions"},
		},
		{
			name:   "get rollout",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetRollout(ctx, "ops", "a b") },
			answer: ro,
			want:   ro,
			req: recorded{Method: "GET", Path: "/v1/projects/ops/deployments/a b/rollout",
				RawPath: "/v1/projects/ops/deployments/a%20b/rollout"},
		},
		{
			name: "pause rollout",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RolloutAction(ctx, "default", "hello", ActionPause)
			},
			answer: ro,
			want:   ro,
			req:    recorded{Method: "POST", Path: "/v1/projects/default/deployments/hello/rollout/pause"},
		},
		{
			name: "resume rollout",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RolloutAction(ctx, "default", "hello", ActionResume)
			},
			answer: ro,
			want:   ro,
			req:    recorded{Method: "POST", Path: "/v1/projects/default/deployments/hello/rollout/resume"},
		},
		{
			name: "abort rollout",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RolloutAction(ctx, "default", "hello", ActionAbort)
			},
			answer: ro,
			want:   ro,
			req:    recorded{Method: "POST", Path: "/v1/projects/default/deployments/hello/rollout/abort"},
		},
		{
			name: "promote rollout",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RolloutAction(ctx, "default", "hello", ActionPromote)
			},
			answer: ro,
			want:   ro,
			req:    recorded{Method: "POST", Path: "/v1/projects/default/deployments/hello/rollout/promote"},
		},
		{
			name:   "undo to a revision",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Undo(ctx, "default", "hello", 1) },
			answer: undone,
			want:   undone,
			req: recorded{Method: "POST", Path: "/v1/projects/default/deployments/hello/rollout/undo",
				ContentType: "application/json", Body: `{"toRevision":1}`},
		},
		{
			name:   "undo to the revision before the stable one",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Undo(ctx, "default", "hello", 0) },
			answer: undone,
			want:   undone,
			req: recorded{Method: "POST", Path: "/v1/projects/default/deployments/hello/rollout/undo",
				ContentType: "application/json", Body: `{}`},
		},
		{
			name:   "list all events",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListEvents(ctx, "default", "", 0, 0) },
			answer: nil,
			want:   []api.Event{},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/events"},
		},
		{
			name: "long poll a deployment's events",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ListEvents(ctx, "default", "hello", 7, 30*time.Second)
			},
			answer: []api.Event{ev},
			want:   []api.Event{ev},
			req:    recorded{Method: "GET", Path: "/v1/projects/default/events", Query: "after=7&deployment=hello&wait=30s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, reqs := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.status == http.StatusNoContent {
					w.WriteHeader(tt.status)
					return
				}
				writeJSON(w, http.StatusOK, tt.answer)
			})
			got, err := tt.call(context.Background(), c)
			if err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v; want %#v", got, tt.want)
			}
			if len(*reqs) != 1 {
				t.Fatalf("got %d requests; want 1", len(*reqs))
			}
			r := (*reqs)[0]
			want := tt.req
			if want.RawPath == "" {
				want.RawPath = want.Path
			}
			want.Auth = "Bearer " + testToken
			r.Body = strings.TrimSpace(r.Body)
			if r != want {
				t.Errorf("request:\ngot  %+v\nwant %+v", r, want)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		wantMsg   string
		wantDet   []string
		wantError string
	}{
		{
			name:    "validation with details",
			status:  http.StatusBadRequest,
			body:    `{"error":"invalid spec","details":["hello.yaml:3: metadata.name: must not be empty","hello.yaml:9: spec.mode: \"x\" is not global or replicated"]}`,
			wantMsg: "invalid spec",
			wantDet: []string{"hello.yaml:3: metadata.name: must not be empty", `hello.yaml:9: spec.mode: "x" is not global or replicated`},
			wantError: "invalid spec\nhello.yaml:3: metadata.name: must not be empty\n" +
				`hello.yaml:9: spec.mode: "x" is not global or replicated`,
		},
		{
			name:      "unauthorized",
			status:    http.StatusUnauthorized,
			body:      `{"error":"missing or unknown bearer token"}`,
			wantMsg:   "missing or unknown bearer token",
			wantError: "missing or unknown bearer token",
		},
		{
			name:      "not found",
			status:    http.StatusNotFound,
			body:      `{"error":"deployment \"x\" not found"}`,
			wantMsg:   `deployment "x" not found`,
			wantError: `deployment "x" not found`,
		},
		{
			name:      "not the API's error body",
			status:    http.StatusBadGateway,
			body:      "upstream down\n",
			wantMsg:   "502 Bad Gateway: upstream down",
			wantError: "502 Bad Gateway: upstream down",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			_, err := c.Apply(context.Background(), "hello.yaml", "", []byte("x"))
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got %T %v; want *APIError", err, err)
			}
			if ae.StatusCode != tt.status || ae.Message != tt.wantMsg || !reflect.DeepEqual(ae.Details, tt.wantDet) {
				t.Errorf("got %+v; want status %d message %q details %q", ae, tt.status, tt.wantMsg, tt.wantDet)
			}
			if err.Error() != tt.wantError {
				t.Errorf("Error():\ngot  %q\nwant %q", err.Error(), tt.wantError)
			}
			if got, want := IsUnauthorized(err), tt.status == http.StatusUnauthorized; got != want {
				t.Errorf("IsUnauthorized = %v; want %v", got, want)
			}
			if got, want := IsNotFound(err), tt.status == http.StatusNotFound; got != want {
				t.Errorf("IsNotFound = %v; want %v", got, want)
			}
		})
	}
}

func TestNoTokenSendsNoHeader(t *testing.T) {
	var auth []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Values("Authorization")
		writeJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or unknown bearer token"})
	}))
	defer srv.Close()
	c, err := New(Config{Addr: srv.URL, CAPEM: caPEM(srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	_, err = c.ListNodes(context.Background())
	if !IsUnauthorized(err) {
		t.Fatalf("got %v; want a 401 APIError", err)
	}
	if len(auth) != 0 {
		t.Errorf("got Authorization %q; want none", auth)
	}
}

func TestUnreachable(t *testing.T) {
	// A port that was just free: nothing listens on it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "https://" + l.Addr().String()
	l.Close()

	c, err := New(Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListNodes(context.Background())
	var ce *ConnError
	if !errors.As(err, &ce) || ce.TLS {
		t.Fatalf("got %T %v; want a non-TLS *ConnError", err, err)
	}
	want := "cannot reach dockfleet server at " + addr + ": dial tcp " + l.Addr().String() + ": connect: connection refused"
	if err.Error() != want {
		t.Errorf("got  %q\nwant %q", err.Error(), want)
	}
}

func TestUntrustedCertificate(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	c, err := New(Config{Addr: srv.URL}) // the system pool does not know httptest's CA
	if err != nil {
		t.Fatal(err)
	}
	err = c.Health(context.Background())
	var ce *ConnError
	if !errors.As(err, &ce) || !ce.TLS {
		t.Fatalf("got %T %v; want a TLS *ConnError", err, err)
	}
	for _, want := range []string{srv.URL, "--ca-cert", "DOCKFLEET_CACERT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestCanceled(t *testing.T) {
	// The handler answers only after the test: waiting on r.Context() would
	// let it answer 200 as soon as the client hangs up.
	done := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-done
	}))
	defer srv.Close()
	defer close(done)
	c, err := New(Config{Addr: srv.URL, CAPEM: caPEM(srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = c.Health(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want context.DeadlineExceeded", err)
	}
}

func TestCACertFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	good := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(good, caPEM(srv), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.crt")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := New(Config{Addr: srv.URL, CACertFile: good})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if err := c.Health(context.Background()); err != nil {
		t.Errorf("Health with the CA file: %v", err)
	}

	for _, file := range []string{bad, filepath.Join(dir, "missing.crt")} {
		if _, err := New(Config{Addr: srv.URL, CACertFile: file}); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("New with CA file %s: got %v; want an error naming the file", file, err)
		}
	}
}

func TestAddr(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "", want: "https://127.0.0.1:7400"},
		{in: "127.0.0.1:7400", want: "https://127.0.0.1:7400"},
		{in: "https://fleet.example.com/", want: "https://fleet.example.com"},
		{in: "https://fleet.example.com/base/", want: "https://fleet.example.com/base"},
		{in: "http://127.0.0.1:7400", wantErr: true},
		{in: "https://", wantErr: true},
		{in: "https://h/?x=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := New(Config{Addr: tt.in})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %q; want an error", c.Addr())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Addr() != tt.want {
				t.Errorf("got %q; want %q", c.Addr(), tt.want)
			}
		})
	}
}

func TestUnknownRolloutAction(t *testing.T) {
	c, reqs := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.Rollout{})
	})
	_, err := c.RolloutAction(context.Background(), "default", "hello", "undo")
	if err == nil || !strings.Contains(err.Error(), `unknown rollout action "undo"`) {
		t.Errorf("got %v; want an unknown action error", err)
	}
	if len(*reqs) != 0 {
		t.Errorf("got %d requests; want none", len(*reqs))
	}
}

func TestRolloutConflict(t *testing.T) {
	c, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusConflict, api.Error{Error: "no rollout of hello is running"})
	})
	_, err := c.RolloutAction(context.Background(), "default", "hello", ActionPause)
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || ae.Message != "no rollout of hello is running" {
		t.Errorf("got %v; want the server's 409", err)
	}
}

// TestLongPoll checks that a long poll outlasts the header timeout of other
// requests, and is still bounded by its wait plus that timeout.
func TestLongPoll(t *testing.T) {
	const short = 100 * time.Millisecond
	done := make(chan struct{})
	c, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("after") {
		case "1": // answers after the header timeout but within the wait
			time.Sleep(3 * short)
			writeJSON(w, http.StatusOK, []api.Event{{Seq: 2}})
		case "2": // never answers
			<-done
		default:
			time.Sleep(3 * short)
			writeJSON(w, http.StatusOK, api.Rollout{})
		}
	})
	defer close(done)
	c.hc.Transport.(*http.Transport).ResponseHeaderTimeout = short
	c.headerTimeout = short
	ctx := context.Background()

	if _, err := c.GetRollout(ctx, "default", "hello"); err == nil {
		t.Fatal("GetRollout slower than the header timeout: got no error; want a timeout")
	}
	evs, err := c.ListEvents(ctx, "default", "", 1, time.Second)
	if err != nil || len(evs) != 1 || evs[0].Seq != 2 {
		t.Errorf("long poll answered after %v: got %v, %v; want event 2", 3*short, evs, err)
	}
	start := time.Now()
	_, err = c.ListEvents(ctx, "default", "", 2, short)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("long poll never answered: got %v; want no answer within 200ms", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("long poll gave up after %v; want about 200ms", d)
	}
}
