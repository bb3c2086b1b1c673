package httpguard_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/httpguard"
	"github.com/dockfleet/dockfleet/internal/restapi"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
)

// The tests below run a real server (servertest: SQLite, TLS, the API's
// real listener) in the test's process; they never skip.

// Every goroutine the servers start ends when their Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// securityHeaders are those of every API answer.
var securityHeaders = map[string]string{
	"X-Content-Type-Options":       "nosniff",
	"X-Frame-Options":              "DENY",
	"Content-Security-Policy":      httpguard.APIContentSecurityPolicy,
	"Referrer-Policy":              "no-referrer",
	"Strict-Transport-Security":    "max-age=31536000",
	"Cache-Control":                "no-store",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", file)
	}
	return pool
}

func apiAddr(f *servertest.Fixture) string { return strings.TrimPrefix(f.Server.APIURL(), "https://") }

// The API's listener takes TLS 1.2 with forward-secret AEAD suites and
// TLS 1.3, and refuses older versions and CBC suites at the handshake
// (the server answers with an alert), as pki.APIServerTLS says.
func TestAPITLSVersions(t *testing.T) {
	f := servertest.Start(t, nil)
	pool := caPool(t, f.CAFile)
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
	aead := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	tests := []struct {
		name     string
		version  uint16
		suites   []uint16
		wantErr  string // a part of the client's error; "" for a handshake that works
		wantOnly []uint16
	}{
		{"TLS 1.0", tls.VersionTLS10, nil, "remote error: tls: protocol version not supported", nil},
		{"TLS 1.1", tls.VersionTLS11, nil, "remote error: tls: protocol version not supported", nil},
		{"TLS 1.2 with CBC suites only", tls.VersionTLS12, cbc, "remote error: tls: handshake failure", nil},
		{"TLS 1.2", tls.VersionTLS12, nil, "", aead},
		{"TLS 1.2 offering CBC suites first", tls.VersionTLS12, append(slices.Clone(cbc), aead...), "", aead},
		{"TLS 1.3", tls.VersionTLS13, nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tt.version, MaxVersion: tt.version,
				CipherSuites: tt.suites, NextProtos: []string{"http/1.1"}}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", apiAddr(f), cfg)
			if tt.wantErr != "" {
				if err == nil {
					c.Close()
					t.Fatalf("handshake with %s succeeded; want the server to refuse it", tt.name)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("handshake: %v; want the server's alert %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v; want it to succeed", err)
			}
			defer c.Close()
			st := c.ConnectionState()
			if st.Version != tt.version {
				t.Errorf("version %s; want %s", tls.VersionName(st.Version), tls.VersionName(tt.version))
			}
			if tt.wantOnly != nil && !slices.Contains(tt.wantOnly, st.CipherSuite) {
				t.Errorf("cipher suite %s; want an ECDHE AEAD one", tls.CipherSuiteName(st.CipherSuite))
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("GET /v1/health: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /v1/health: %d; want 200", resp.StatusCode)
			}
			checkHeaders(t, "GET /v1/health", resp.Header)
		})
	}
}

func checkHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k, v := range securityHeaders {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s: header %s = %q; want %q", what, k, got, v)
		}
	}
}

// apiClient is an HTTPS client of f's API that connects from the
// loopback address src and speaks HTTP/2 if h2, else HTTP/1.1.
func apiClient(t *testing.T, f *servertest.Fixture, src string, h2 bool) *http.Client {
	t.Helper()
	var protos http.Protocols
	protos.SetHTTP1(!h2)
	protos.SetHTTP2(h2)
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr := &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: caPool(t, f.CAFile), MinVersion: tls.VersionTLS12},
		Protocols:       &protos,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// unsized hides a reader's length: a request with it sends its body
// chunked (HTTP/1.1) or without a content-length (HTTP/2).
type unsized struct{ io.Reader }

type answer struct {
	proto  int // HTTP's major version
	status int
	header http.Header
	err    api.Error
}

// do sends a request and returns its answer; the body, when it is an
// error, decoded.
func do(t *testing.T, c *http.Client, f *servertest.Fixture, method, path, token string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.Server.APIURL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	a := answer{proto: resp.ProtoMajor, status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &a.err); err != nil {
			t.Errorf("%s %s: %d with a body that is not the API's JSON error: %q", method, path, resp.StatusCode, b)
		}
	}
	return a
}

// spec is a valid spec file of deployment name, padded with comment lines
// to size bytes.
func spec(name string, size int) []byte {
	b := fmt.Appendf(nil, "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: %s}\nspec:\n  container: {image: hello:v1}\n", name)
	line := "# " + strings.Repeat("x", 97) + "\n"
	for len(b)+2*len(line) <= size {
		b = append(b, line...)
	}
	b = append(b, "# "...)
	return append(b, strings.Repeat("x", size-len(b)-1)+"\n"...)
}

// Over real TLS, in HTTP/1.1 and HTTP/2: a body over its endpoint's limit
// is refused with 413, before it is read when its length is declared
// (without a token, even), or once the handler reads past the limit of
// one sent without; apply keeps its larger limit; every answer carries
// the security headers.
func TestAPIBodyLimitsOverTLS(t *testing.T) {
	f := servertest.Start(t, nil)
	for _, h2 := range []bool{false, true} {
		name, src, deployment := "HTTP/1.1", "127.0.0.1", "web-h1"
		if h2 {
			name, src, deployment = "HTTP/2", "127.0.0.2", "web-h2"
		}
		t.Run(name, func(t *testing.T) {
			c := apiClient(t, f, src, h2)
			small := fmt.Sprintf("the request body is larger than %d bytes, the most this endpoint takes", httpguard.DefaultMaxBody)
			large := fmt.Sprintf("the request body is larger than %d bytes, the most this endpoint takes", restapi.MaxSpecFile)
			labels := func(n int) []byte { return fmt.Appendf(nil, `{"labels":{"a":%q}}`, strings.Repeat("x", n)) }
			for _, tt := range []struct {
				what, method, path, token string
				body                      io.Reader
				want                      int
				msg                       string
			}{
				{"a JSON body over the limit, sized, without a token", "POST", "/v1/tokens", "",
					bytes.NewReader(labels(100 << 10)), 413, small},
				{"a JSON body over the limit, unsized", "POST", "/v1/tokens", f.AdminToken,
					unsized{bytes.NewReader(labels(100 << 10))}, 413, small},
				{"a JSON body within the limit, unsized", "POST", "/v1/tokens", f.AdminToken,
					unsized{bytes.NewReader(labels(10))}, 201, ""},
				{"a spec over the default limit, at apply's", "POST", "/v1/apply?filename=web.yaml", f.AdminToken,
					bytes.NewReader(spec(deployment, restapi.MaxSpecFile)), 200, ""},
				{"a spec over apply's limit, sized", "POST", "/v1/apply?filename=web.yaml", f.AdminToken,
					bytes.NewReader(spec(deployment, restapi.MaxSpecFile+1)), 413, large},
				{"a spec over apply's limit, unsized", "POST", "/v1/apply?filename=web.yaml", f.AdminToken,
					unsized{bytes.NewReader(spec(deployment, restapi.MaxSpecFile+1))}, 413, large},
				{"no token", "GET", "/v1/nodes", "", nil, 401, "missing or invalid credential"},
				{"no such endpoint", "GET", "/v1/nope", f.AdminToken, nil, 404, "no API endpoint"},
			} {
				a := do(t, c, f, tt.method, tt.path, tt.token, tt.body)
				if wantProto := map[bool]int{false: 1, true: 2}[h2]; a.proto != wantProto {
					t.Errorf("%s: answered in HTTP/%d; want HTTP/%d", tt.what, a.proto, wantProto)
				}
				if a.status != tt.want || !strings.Contains(a.err.Error, tt.msg) {
					t.Errorf("%s: %d %q; want %d saying %q", tt.what, a.status, a.err.Error, tt.want, tt.msg)
				}
				checkHeaders(t, tt.what, a.header)
			}
		})
	}
}

// One source address is held to its burst and rate over real TLS: one
// request more is answered 429 with Retry-After; GET /v1/health is not
// counted, and other addresses are not held up.
func TestAPISourceRateOverTLS(t *testing.T) {
	const burst = 20
	f := servertest.Start(t, func(cfg *server.Config) { cfg.APISourceBurst, cfg.APISourceRate = burst, 0.01 })
	c := apiClient(t, f, "127.0.0.3", true)
	for i := range burst {
		if a := do(t, c, f, "GET", "/v1/nodes", "", nil); a.status != http.StatusUnauthorized {
			t.Fatalf("request %d of the burst: %d; want 401 (counted all the same)", i+1, a.status)
		}
	}
	a := do(t, c, f, "GET", "/v1/nodes", f.AdminToken, nil)
	if a.status != http.StatusTooManyRequests || !strings.Contains(a.err.Error, "too many requests from 127.0.0.3") {
		t.Fatalf("a request over the burst: %d %q; want 429 saying too many requests from 127.0.0.3", a.status, a.err.Error)
	}
	// 0.01 a second: one request every 100s.
	if s, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || s < 1 || s > 100 {
		t.Errorf("Retry-After %q; want whole seconds, 1 to 100", a.header.Get("Retry-After"))
	}
	checkHeaders(t, "429", a.header)
	if a := do(t, c, f, "GET", "/v1/health", "", nil); a.status != http.StatusOK {
		t.Errorf("GET /v1/health from the limited address: %d; want 200", a.status)
	}
	other := apiClient(t, f, "127.0.0.4", false)
	if a := do(t, other, f, "GET", "/v1/nodes", f.AdminToken, nil); a.status != http.StatusOK {
		t.Errorf("another address: %d; want 200", a.status)
	}
	if _, err := f.Client.ListNodes(context.Background()); err != nil {
		t.Errorf("the CLI's client from 127.0.0.1: %v", err)
	}
}
