package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// wantHeaders are the security headers of every answer of the API's
// default policy.
var wantHeaders = map[string]string{
	"X-Content-Type-Options":       "nosniff",
	"X-Frame-Options":              "DENY",
	"Content-Security-Policy":      "default-src 'none'; frame-ancestors 'none'",
	"Referrer-Policy":              "no-referrer",
	"Strict-Transport-Security":    "max-age=31536000",
	"Cache-Control":                "no-store",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

// checkHeaders fails the test unless h has want's headers.
func checkHeaders(t *testing.T, what string, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s: header %s = %q; want %q", what, k, got, v)
		}
	}
}

// checkError fails the test unless body is the API's JSON error and its
// message holds part.
func checkError(t *testing.T, what string, body []byte, part string) {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, part) {
		t.Errorf("%s: body %q; want the API's JSON error saying %q", what, body, part)
	}
}

// testGuard is a guard on a fake clock that logs to the returned buffer.
func testGuard(t *testing.T, cfg Config) (*Guard, *clockwork.FakeClock, *testenv.Buffer) {
	t.Helper()
	clock := clockwork.NewFakeClock()
	var logs testenv.Buffer
	cfg.Clock, cfg.Logger = clock, slog.New(slog.NewTextHandler(&logs, nil))
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g, clock, &logs
}

// echo is the handler behind the guard in these tests: it reads the
// whole body, answering 400 if that fails (as the API's handlers do), or
// else 200 with the body's length; /teapot answers 418 without reading.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/teapot" {
		w.WriteHeader(http.StatusTeapot)
		return
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(api.Error{Error: "reading body: " + err.Error()})
		return
	}
	io.WriteString(w, strings.Repeat("x", len(b)))
})

// unsized hides a reader's length, so that a request with it has a body
// of unknown length, as a chunked one.
type unsized struct{ io.Reader }

func serve(h http.Handler, method, target, remote string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, body)
	if _, ok := body.(unsized); ok {
		r.ContentLength = -1
	}
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestSourceRateLimit(t *testing.T) {
	g, clock, logs := testGuard(t, Config{SourceBurst: 3, SourceRate: 0.5,
		Routes: map[string]Policy{"GET /v1/health": {NoSourceLimit: true}}})
	h := g.Wrap(echo)
	for i := range 3 {
		if w := serve(h, "GET", "/v1/nodes", "192.0.2.7:4000", nil); w.Code != 200 {
			t.Fatalf("request %d of the burst: %d; want 200", i+1, w.Code)
		}
	}
	w := serve(h, "GET", "/v1/nodes", "192.0.2.7:4001", nil) // another connection, the same source
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("request over the burst: %d, Retry-After %q; want 429, 2", w.Code, w.Header().Get("Retry-After"))
	}
	checkError(t, "429", w.Body.Bytes(), "too many requests from 192.0.2.7: the server takes 3 at once and 0.5 a second after from one address; retry in 2s")
	checkHeaders(t, "429", w.Header(), wantHeaders)
	if w := serve(h, "GET", "/v1/health", "192.0.2.7:4000", nil); w.Code != 200 {
		t.Errorf("GET /v1/health of a source over its rate: %d; want 200 (not counted)", w.Code)
	}
	if w := serve(h, "POST", "/v1/health", "192.0.2.7:4000", nil); w.Code != http.StatusTooManyRequests {
		t.Errorf("POST /v1/health of a source over its rate: %d; want 429 (only GET is not counted)", w.Code)
	}
	if w := serve(h, "GET", "/v1/nodes", "192.0.2.8:4000", nil); w.Code != 200 {
		t.Errorf("another source: %d; want 200", w.Code)
	}
	clock.Advance(1500 * time.Millisecond)
	if w := serve(h, "GET", "/v1/nodes", "192.0.2.7:4000", nil); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Errorf("after 1.5s: %d, Retry-After %q; want 429, 1 (half a second left, rounded up)", w.Code, w.Header().Get("Retry-After"))
	}
	clock.Advance(500 * time.Millisecond)
	if w := serve(h, "GET", "/v1/nodes", "192.0.2.7:4000", nil); w.Code != 200 {
		t.Errorf("after 2s: %d; want 200", w.Code)
	}
	if n := strings.Count(logs.String(), "refusing an API request: its source address is over its request rate"); n != 1 {
		t.Errorf("%d log lines for 3 refusals within %s; want 1:\n%s", n, logInterval, logs)
	}
	if !strings.Contains(logs.String(), "source=192.0.2.7 method=GET path=/v1/nodes") {
		t.Errorf("the refusal's log line does not name its source, method and path:\n%s", logs)
	}
}

// An IPv6 source counts by its /64, as one host or site holds a whole
// one; an IPv4-mapped address is its IPv4 address.
func TestSourceGrouping(t *testing.T) {
	g, _, _ := testGuard(t, Config{SourceBurst: 1, SourceRate: 0.001})
	h := g.Wrap(echo)
	for _, tt := range []struct {
		remote string
		want   int
	}{
		{"[2001:db8:1:2::1]:5000", 200},
		{"[2001:db8:1:2:ffff::9]:5001", 429},
		{"[2001:db8:1:3::1]:5000", 200},
		{"198.51.100.1:80", 200},
		{"[::ffff:198.51.100.1]:80", 429},
	} {
		w := serve(h, "GET", "/v1/nodes", tt.remote, nil)
		if w.Code != tt.want {
			t.Errorf("from %s: %d; want %d", tt.remote, w.Code, tt.want)
		}
		if w.Code == 429 && strings.HasPrefix(tt.remote, "[2001") {
			checkError(t, "429 of an IPv6 source", w.Body.Bytes(), "too many requests from 2001:db8:1:2::/64")
		}
	}
}

func TestBodyLimits(t *testing.T) {
	const small, large = 100, 1000
	g, _, logs := testGuard(t, Config{Default: Policy{MaxBody: small}, Routes: map[string]Policy{"POST /v1/apply": {MaxBody: large}}})
	called := false
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		echo(w, r)
	}))
	tests := []struct {
		name, method, path string
		size               int
		chunked            bool
		want               int
		wantCalled         bool
	}{
		{"at the limit", "POST", "/v1/tokens", small, false, 200, true},
		{"over it, sized", "POST", "/v1/tokens", small + 1, false, 413, false},
		{"at the limit, chunked", "POST", "/v1/tokens", small, true, 200, true},
		{"over it, chunked: the handler's 400 becomes a 413", "POST", "/v1/tokens", small + 1, true, 413, true},
		{"over it, unread", "POST", "/teapot", 10 * small, true, 418, true},
		{"the apply route's limit", "POST", "/v1/apply", large, false, 200, true},
		{"the apply route's limit, chunked", "POST", "/v1/apply", large, true, 200, true},
		{"over the apply route's limit", "POST", "/v1/apply", large + 1, false, 413, false},
		{"over the apply route's limit, chunked", "POST", "/v1/apply", large + 1, true, 413, true},
		{"another method of the apply path", "PUT", "/v1/apply", small + 1, false, 413, false},
		{"a GET with a body", "GET", "/v1/nodes", small + 1, false, 413, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called = false
			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("a"), tt.size))
			if tt.chunked {
				body = unsized{body}
			}
			w := serve(h, tt.method, tt.path, "192.0.2.1:1", body)
			if w.Code != tt.want || called != tt.wantCalled {
				t.Fatalf("%d bytes to %s %s: %d, handler called %v; want %d, %v", tt.size, tt.method, tt.path, w.Code, called, tt.want, tt.wantCalled)
			}
			checkHeaders(t, tt.name, w.Header(), wantHeaders)
			if tt.want == 200 && w.Body.Len() != tt.size {
				t.Errorf("the handler read %d bytes; want %d", w.Body.Len(), tt.size)
			}
			if tt.want == 413 {
				limit := small
				if tt.path == "/v1/apply" && tt.method == "POST" {
					limit = large
				}
				checkError(t, "413", w.Body.Bytes(), "the request body is larger than "+strconv.Itoa(limit)+" bytes, the most this endpoint takes")
			}
		})
	}
	if !strings.Contains(logs.String(), "refusing an API request: its body is over its endpoint's limit") {
		t.Errorf("no refusal logged:\n%s", logs)
	}
}

// A handler that read past the limit and returned without a word still
// answers 413; a handler that wrote its status before it read keeps it.
func TestBodyLimitHandlerShapes(t *testing.T) {
	g, _, _ := testGuard(t, Config{Default: Policy{MaxBody: 10}})
	silent := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.ReadAll(r.Body) }))
	if w := serve(silent, "POST", "/x", "192.0.2.1:1", unsized{strings.NewReader(strings.Repeat("a", 11))}); w.Code != 413 {
		t.Errorf("a silent handler: %d; want 413", w.Code)
	}
	streaming := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.(http.Flusher).Flush()
		_, err := io.ReadAll(r.Body)
		io.WriteString(w, err.Error())
	}))
	w := serve(streaming, "POST", "/x", "192.0.2.1:1", unsized{strings.NewReader(strings.Repeat("a", 11))})
	if w.Code != http.StatusAccepted || w.Body.String() != "http: request body too large" || !w.Flushed {
		t.Errorf("a handler that answered first: %d %q, flushed %v; want 202 and its read error, flushed", w.Code, w.Body, w.Flushed)
	}
}

// A route's policy sets its own Content-Security-Policy and caching (the
// console's pages will); a handler may still set its own headers.
func TestRoutePolicyHeaders(t *testing.T) {
	g, _, _ := testGuard(t, Config{Routes: map[string]Policy{"/ui/": {ContentSecurityPolicy: "default-src 'self'", CacheControl: "no-cache"}}})
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui/own" {
			w.Header().Set("Cache-Control", "max-age=60")
		}
	}))
	ui := map[string]string{}
	for k, v := range wantHeaders {
		ui[k] = v
	}
	ui["Content-Security-Policy"], ui["Cache-Control"] = "default-src 'self'", "no-cache"
	checkHeaders(t, "GET /ui/", serve(h, "GET", "/ui/app.js", "192.0.2.1:1", nil).Header(), ui)
	checkHeaders(t, "GET /v1/nodes", serve(h, "GET", "/v1/nodes", "192.0.2.1:1", nil).Header(), wantHeaders)
	if got := serve(h, "GET", "/ui/own", "192.0.2.1:1", nil).Header().Get("Cache-Control"); got != "max-age=60" {
		t.Errorf("Cache-Control set by the handler: %q; want its own, max-age=60", got)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad pattern", Config{Routes: map[string]Policy{"GET /{": {}}}, `httpguard: route "GET /{"`},
		{"same pattern twice", Config{Routes: map[string]Policy{"/a": {}, "GET /{x}": {}, "GET /{y}": {}}}, "httpguard: route"},
		{"negative rate", Config{SourceRate: -1}, "source rate -1"},
		{"negative body", Config{Default: Policy{MaxBody: -1}}, "max body -1: must be positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v; want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestAllowToken(t *testing.T) {
	g, clock, logs := testGuard(t, Config{TokenBurst: 2, TokenRate: 0.1})
	for range 2 {
		if ok, _ := g.AllowToken("tok1"); !ok {
			t.Fatal("a request within the token's burst was refused")
		}
	}
	if ok, wait := g.AllowToken("tok1"); ok || wait != 10*time.Second {
		t.Fatalf("AllowToken over the burst = %v, %v; want false, 10s", ok, wait)
	}
	if ok, _ := g.AllowToken("tok2"); !ok {
		t.Error("another token was refused")
	}
	clock.Advance(10 * time.Second)
	if ok, _ := g.AllowToken("tok1"); !ok {
		t.Error("the token was refused after its wait")
	}
	if !strings.Contains(logs.String(), "refusing an API request: its token is over its request rate") || !strings.Contains(logs.String(), "token_id=tok1") {
		t.Errorf("no refusal logged with the token's ID:\n%s", logs)
	}
	w := httptest.NewRecorder()
	TooManyRequests(w, 1500*time.Millisecond, "too many requests with this API token")
	if w.Code != 429 || w.Header().Get("Retry-After") != "2" {
		t.Errorf("TooManyRequests: %d, Retry-After %q; want 429, 2", w.Code, w.Header().Get("Retry-After"))
	}
	checkError(t, "TooManyRequests", w.Body.Bytes(), "too many requests with this API token")
}

func TestRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{0, "1"}, {time.Nanosecond, "1"}, {time.Second, "1"}, {time.Second + 1, "2"}, {3 * time.Minute, "180"}} {
		if got := RetryAfter(tt.d); got != tt.want {
			t.Errorf("RetryAfter(%v) = %q; want %q", tt.d, got, tt.want)
		}
	}
}

// Sources cycling through IPv6 /64s keep the source limiter at its cap
// (TestBucketsStayBounded sends a million through the buckets alone).
func TestSourceMapBounded(t *testing.T) {
	const max, sources = 1000, 200_000
	g, _, _ := testGuard(t, Config{MaxKeys: max})
	h := g.Wrap(echo)
	for i := range sources {
		if i%1000 == 0 { // through the whole guard once in a while
			if w := serve(h, "GET", "/v1/nodes", ipv6(i), nil); w.Code != 200 {
				t.Fatalf("source %d: %d; want 200", i, w.Code)
			}
			continue
		}
		if ok, _ := g.sources.take(sourceAddr(ipv6(i))); !ok {
			t.Fatalf("source %d refused its first request", i)
		}
	}
	if n := g.sources.len(); n != max {
		t.Errorf("%d source buckets kept after %d sources; want %d, the cap", n, sources, max)
	}
}

// ipv6 is a RemoteAddr in the i-th /64 of 2001:db8::/32.
func ipv6(i int) string { return fmt.Sprintf("[2001:db8:%x:%x::1]:443", i>>16, i&0xffff) }
