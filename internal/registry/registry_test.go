package registry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// TestResolve resolves tags of a real registry (Debian's docker-registry)
// that Docker pushed to, and checks the digests against Docker's own.
func TestResolve(t *testing.T) {
	testenv.HelloImages(t)
	addr := testenv.Registry(t)
	repo := addr + "/dockfleet/hello"
	pinned := testenv.Push(t, "hello:v1", repo+":v1", false)
	if latest := testenv.Push(t, "hello:v1", repo+":latest", false); latest != pinned {
		t.Fatalf("pushing hello:v1 twice: got digests %s and %s; want one", pinned, latest)
	}
	_, port, _ := strings.Cut(addr, ":")

	tests := []struct {
		name, ref, want string
	}{
		{"tag", repo + ":v1", pinned},
		{"no tag is latest", repo, pinned},
		{"localhost", "localhost:" + port + "/dockfleet/hello:v1", "localhost:" + port + "/dockfleet/hello@" + strings.TrimPrefix(pinned, repo+"@")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := registry.Resolve(t.Context(), tt.ref)
			if err != nil || got != tt.want {
				t.Errorf("Resolve(%s): got %q, %v; want %q, nil", tt.ref, got, err, tt.want)
			}
		})
	}

	// Definite answers: the apply is refused with the registry's words.
	absent := []struct {
		name, ref, msg string
	}{
		{"unknown tag", repo + ":absent", "manifest unknown"},
		{"unknown repository", addr + "/dockfleet/nothing:v1", "manifest unknown"}, // distribution 2.8's answer
	}
	for _, tt := range absent {
		t.Run(tt.name, func(t *testing.T) {
			got, err := registry.Resolve(t.Context(), tt.ref)
			if !errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrUnreachable) {
				t.Fatalf("Resolve(%s): got %q, %v; want ErrNotFound", tt.ref, got, err)
			}
			if want := "resolving image " + tt.ref + ": registry: not found: " + tt.msg; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Resolve(%s): got %q; want it to start %q", tt.ref, err, want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	// Nothing listens on port 1 of loopback: refused at once, over HTTPS
	// and over HTTP, and no test traffic leaves the host.
	ref := "127.0.0.1:1/dockfleet/missing:v0"
	start := time.Now()
	got, err := registry.Resolve(t.Context(), ref)
	if !errors.Is(err, registry.ErrUnreachable) || got != "" {
		t.Fatalf("Resolve(%s): got %q, %v; want ErrUnreachable", ref, got, err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "resolving image "+ref+": registry: unreachable: ") || !strings.Contains(msg, "connection refused") {
		t.Errorf("Resolve(%s): got %q; want the reference and the cause", ref, msg)
	}
	if d := time.Since(start); d > registry.Timeout {
		t.Errorf("Resolve(%s): took %v; want less than %v", ref, d, registry.Timeout)
	}
}

// TestAnswers covers how Resolve classifies what a registry says, against
// a stand-in on loopback that answers every manifest request with one
// status and body.
func TestAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		is     error // nil: none of the package's errors
		msg    string
	}{
		{"manifest unknown", 404, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v1"}}]}`,
			registry.ErrNotFound, "registry: not found: manifest unknown"},
		{"404 without a body", 404, "", registry.ErrNotFound, "registry: not found: HTTP 404 Not Found"},
		{"unauthorized", 401, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`,
			registry.ErrDenied, "registry: access denied: authentication required"},
		{"denied", 403, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`,
			registry.ErrDenied, "registry: access denied: requested access to the resource is denied"},
		{"bad request", 400, `{"errors":[{"code":"TAG_INVALID","message":"manifest tag did not match URI"}]}`,
			nil, "manifest tag did not match URI"},
		{"rate limited", 429, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`,
			registry.ErrUnreachable, "registry: unreachable: HTTP 429 Too Many Requests"}, // HEAD's, retried: no GET
		{"served without a digest", 200, `{"schemaVersion":2}`, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/v2/{$}", func(w http.ResponseWriter, _ *http.Request) {})
			mux.HandleFunc("/v2/app/manifests/v1", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
				w.WriteHeader(tt.status)
				if r.Method == http.MethodGet {
					_, _ = io.WriteString(w, tt.body)
				}
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			ref := srv.Listener.Addr().String() + "/app:v1"

			got, err := registry.Resolve(t.Context(), ref)
			if tt.status == 200 {
				// No Docker-Content-Digest: the digest is the manifest's own.
				want := srv.Listener.Addr().String() + "/app@sha256:"
				if err != nil || !strings.HasPrefix(got, want) {
					t.Errorf("Resolve(%s): got %q, %v; want %s…", ref, got, err, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Resolve(%s): got %q; want an error", ref, got)
			}
			for _, sentinel := range []error{registry.ErrNotFound, registry.ErrDenied, registry.ErrUnreachable, registry.ErrInvalid} {
				if errors.Is(err, sentinel) != (sentinel == tt.is) {
					t.Errorf("Resolve(%s): got %v; errors.Is(%v) = %t", ref, err, sentinel, !(sentinel == tt.is))
				}
			}
			if want := "resolving image " + ref + ": " + tt.msg; err.Error() != want {
				t.Errorf("Resolve(%s): got %q; want %q", ref, err, want)
			}
		})
	}
}

// TestSlowRegistry checks that the caller's deadline bounds Resolve and
// that running out of time counts as no answer.
func TestSlowRegistry(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ref := srv.Listener.Addr().String() + "/app:v1"

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := registry.Resolve(ctx, ref)
	if !errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("Resolve(%s) past its deadline: got %v; want ErrUnreachable", ref, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Resolve(%s) past its deadline: returned after %v; want about 300ms", ref, d)
	}

	// The caller giving up is not the registry's fault.
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = registry.Resolve(ctx, ref)
	if !errors.Is(err, context.Canceled) || errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("Resolve(%s), canceled: got %v; want context.Canceled alone", ref, err)
	}
}

// TestNormalize covers references that carry a digest: they are returned
// in Docker's familiar form without a request, which the canceled context
// would make fail.
func TestNormalize(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		ref, want string
	}{
		{"nginx@" + digestA, "nginx@" + digestA},
		{"docker.io/library/nginx@" + digestA, "nginx@" + digestA},
		{"docker.io/nginx@" + digestA, "nginx@" + digestA},
		{"index.docker.io/library/nginx@" + digestA, "nginx@" + digestA},
		{"docker.io/user/app@" + digestA, "user/app@" + digestA},
		{"nginx:1.25@" + digestA, "nginx@" + digestA},
		{"127.0.0.1:5000/dockfleet/hello@" + digestA, "127.0.0.1:5000/dockfleet/hello@" + digestA},
		{"127.0.0.1:5000/hello:v1@" + digestA, "127.0.0.1:5000/hello@" + digestA},
		{"localhost/hello@" + digestA, "localhost/hello@" + digestA},
		{"[::1]:5000/hello@" + digestA, "[::1]:5000/hello@" + digestA},
		{"ghcr.io/org/app@" + digestA, "ghcr.io/org/app@" + digestA},
	}
	for _, tt := range tests {
		got, err := registry.Resolve(ctx, tt.ref)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%s): got %q, %v; want %q, nil", tt.ref, got, err, tt.want)
		}
	}

	invalid := []string{
		"",
		"Nginx:latest",
		"nginx@sha256:abc",
		"nginx:bad tag",
		"nginx@md5:" + strings.Repeat("a", 32),
	}
	for _, ref := range invalid {
		if got, err := registry.Resolve(ctx, ref); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Resolve(%q): got %q, %v; want ErrInvalid", ref, got, err)
		}
	}
}

// TestPin covers what a node's report may pin: only a sha256 digest, put on
// the spec image's own repository whatever repository the report names.
func TestPin(t *testing.T) {
	tests := []struct {
		image, reported, want string
	}{
		{"127.0.0.1:1/shop/web:1.0", digestA, "127.0.0.1:1/shop/web@" + digestA},
		{"127.0.0.1:1/shop/web:1.0", "127.0.0.1:1/shop/web@" + digestA, "127.0.0.1:1/shop/web@" + digestA},
		{"nginx", "docker.io/library/nginx@" + digestA, "nginx@" + digestA},
		{"docker.io/library/nginx:1.25", "nginx@" + digestA, "nginx@" + digestA},
		{"nginx:1.25", "nginx:1.25@" + digestA, "nginx@" + digestA},
	}
	for _, tt := range tests {
		got, err := registry.Pin(tt.image, tt.reported)
		if err != nil || got != tt.want {
			t.Errorf("Pin(%s, %s): got %q, %v; want %q, nil", tt.image, tt.reported, got, err, tt.want)
		}
	}

	refused := []string{
		"",
		"attacker.example.com/backdoor:latest",
		"attacker.example.com/backdoor@" + digestA,
		"127.0.0.1:1/shop/other@" + digestA,
		"127.0.0.2:1/shop/web@" + digestA,
		"127.0.0.1:1/shop/web:1.0",
		"sha256:abc",
		"sha256:" + strings.Repeat("A", 64),
		"sha512:" + strings.Repeat("a", 128),
		"127.0.0.1:1/shop/web@sha512:" + strings.Repeat("a", 128),
		"no-colon-at-all",
		strings.Repeat("a", 4096) + "@" + digestA,
	}
	for _, reported := range refused {
		if got, err := registry.Pin("127.0.0.1:1/shop/web:1.0", reported); !errors.Is(err, registry.ErrInvalid) || got != "" {
			t.Errorf("Pin(127.0.0.1:1/shop/web:1.0, %.60q): got %q, %v; want ErrInvalid", reported, got, err)
		}
	}
}
