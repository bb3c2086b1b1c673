package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// testNow is the clock of every test: canned objects are dated relative to it.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testToken = "test-admin-token"

// result is what one dockfleet run did.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs dockfleet with args, an environment of vars only and stdin.
func runCLI(t *testing.T, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	return runCLIContext(context.Background(), t, vars, stdin, args...)
}

// runCLIContext is runCLI until ctx ends. Commands that follow something
// poll every millisecond, and stdout is not a terminal.
func runCLIContext(ctx context.Context, t *testing.T, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(stdin),
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return vars[k] },
		now:    func() time.Time { return testNow },
		poll:   time.Millisecond,
	}
	code := run(ctx, args, e)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// request is what the fake API saw of one request.
type request struct {
	Method, Path, Query, Auth, Body string
}

// fakeAPI is a TLS server that answers canned JSON by "METHOD /path".
type fakeAPI struct {
	srv    *httptest.Server
	caFile string

	mu      sync.Mutex
	answers map[string]answer
	funcs   map[string]http.HandlerFunc
	seen    []request
}

type answer struct {
	status int
	body   any
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{answers: map[string]answer{}, funcs: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are tested
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.caFile = filepath.Join(t.TempDir(), "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(f.caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// on sets the answer to "METHOD /path".
func (f *fakeAPI) on(route string, status int, body any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[route] = answer{status, body}
}

// onFunc has h answer "METHOD /path".
func (f *fakeAPI) onFunc(route string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.funcs[route] = h
}

// onSeq gives "METHOD /path" the answers in turn; the last answers every
// request after it.
func (f *fakeAPI) onSeq(route string, answers ...answer) {
	var (
		mu sync.Mutex
		n  int
	)
	f.onFunc(route, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := answers[min(n, len(answers)-1)]
		n++
		mu.Unlock()
		writeAnswer(w, a)
	})
}

// okAnswer is a 200 answer of body.
func okAnswer(body any) answer { return answer{http.StatusOK, body} }

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), string(body)})
	a, ok := f.answers[r.Method+" "+r.URL.Path]
	h := f.funcs[r.Method+" "+r.URL.Path]
	f.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	if !ok {
		a = answer{http.StatusNotFound, api.Error{Error: "no route " + r.Method + " " + r.URL.Path}}
	}
	writeAnswer(w, a)
}

func writeAnswer(w http.ResponseWriter, a answer) {
	if a.body == nil {
		w.WriteHeader(a.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_ = json.NewEncoder(w).Encode(a.body)
}

func (f *fakeAPI) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.seen...)
}

// args are the flags that point a command at the fake API.
func (f *fakeAPI) args(args ...string) []string {
	return append(args, "--addr", f.srv.URL, "--ca-cert", f.caFile, "--token", testToken)
}

// Canned objects.
var (
	nodeWeb1 = api.Node{
		ID: "n-1a2b", Name: "web-1", Labels: map[string]string{"role": "web", "zone": "eu-1"},
		State: api.NodeReady, LastSeen: testNow.Add(-3 * time.Second),
		Facts: api.Facts{AgentVersion: "0.1.0", DockerVersion: "20.10.24", OS: "linux", Arch: "amd64",
			Hostname: "web-1.example", CPUs: 4, MemoryBytes: 8 << 30},
		Usage:     api.Usage{CPUPercent: 12.5, MemoryBytes: 512 << 20, Containers: 3},
		CreatedAt: testNow.Add(-48 * time.Hour),
	}
	nodeWeb2 = api.Node{
		ID: "n-3c4d", Name: "web-2", State: api.NodeUnreachable, LastSeen: testNow.Add(-5 * time.Minute),
		Error: "docker: connection refused", CreatedAt: testNow.Add(-time.Hour),
	}
	depHello = api.Deployment{
		Project: "default", Name: "hello", Revision: 2,
		Spec: spec.Deployment{
			APIVersion: spec.APIVersion, Kind: spec.KindDeployment,
			Metadata: spec.Metadata{Name: "hello", Project: "default"},
			Spec: spec.DeploymentSpec{
				Mode:     spec.ModeGlobal,
				Selector: spec.Selector{MatchLabels: map[string]string{"role": "web"}},
				Container: spec.Container{
					Image: "hello:v1",
					HealthCheck: &spec.HealthCheck{HTTP: &spec.HTTPCheck{Path: "/healthz", Port: 8080},
						Interval: spec.Duration(2 * time.Second)},
				},
			},
		},
		CreatedAt: testNow.Add(-10 * time.Minute), UpdatedAt: testNow.Add(-time.Minute),
	}
	depAPI = api.Deployment{
		Project: "default", Name: "api", Revision: 1,
		Spec: spec.Deployment{Spec: spec.DeploymentSpec{
			Mode: spec.ModeReplicated, Replicas: 3,
			Container: spec.Container{Image: "api:2.0"},
		}},
		CreatedAt: testNow.Add(-3 * time.Hour), UpdatedAt: testNow.Add(-3 * time.Hour),
	}
	instances = []api.Instance{
		{ID: "i-hello-1", Project: "default", Deployment: "hello", NodeID: "n-1a2b", NodeName: "web-1", Revision: 2,
			State: api.InstanceHealthy, ImageDigest: "hello@sha256:4f2a9c61b7de0e5f7a3c1d2b8e9f60718293a4b5c6d7e8f90123456789abcdef", ContainerID: "0123456789abcdef0123", CreatedAt: testNow.Add(-time.Minute), UpdatedAt: testNow.Add(-30 * time.Second)},
		{ID: "i-hello-2", Project: "default", Deployment: "hello", NodeID: "n-3c4d", NodeName: "web-2", Revision: 2,
			State: api.InstanceFailed, Reason: "exited with code 1", Restarts: 4, CreatedAt: testNow.Add(-time.Minute), UpdatedAt: testNow.Add(-20 * time.Second)},
		{ID: "i-api-1", Project: "default", Deployment: "api", NodeID: "n-1a2b", NodeName: "web-1", Revision: 1,
			State: api.InstanceRunning, ContainerID: "fedcba9876543210", CreatedAt: testNow.Add(-3 * time.Hour), UpdatedAt: testNow.Add(-3 * time.Hour)},
		{ID: "i-api-2", Project: "default", Deployment: "api", NodeID: "n-1a2b", Revision: 1,
			State: api.InstancePending, CreatedAt: testNow.Add(-3 * time.Hour), UpdatedAt: testNow.Add(-3 * time.Hour)},
	}
)

// lines joins lines with a final newline, for readable expected output.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// checkOutput compares a run's output and exit code with what is wanted.
func checkOutput(t *testing.T, got result, wantCode int, wantStdout string) {
	t.Helper()
	if got.code != wantCode {
		t.Errorf("exit code %d; want %d (stderr %q)", got.code, wantCode, got.stderr)
	}
	if got.stdout != wantStdout {
		t.Errorf("stdout:\ngot:\n%s\nwant:\n%s", got.stdout, wantStdout)
	}
}
