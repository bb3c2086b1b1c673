package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/pki/pkitest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// Enrollment gives up on a server it does not trust, and retries one that
// cut the handshake short, as a server over its limit for the agent's
// source address does. The handshake's error is told by its type.
func TestDistrusted(t *testing.T) {
	cut := func(op string, errno syscall.Errno) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
	}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"pinned CA mismatch", &untrustedServerError{fmt.Errorf("%w: got ab; want cd", pki.ErrFingerprintMismatch)}, true},
		{"--ca-cert unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		{"EOF", io.EOF, false},
		{"connection reset", cut("read", syscall.ECONNRESET), false},
		{"broken pipe", cut("write", syscall.EPIPE), false},
		{"connection refused", cut("dial", syscall.ECONNREFUSED), false},
		{"no handshake error", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := distrusted(tt.err); got != tt.want {
				t.Errorf("distrusted(%v) = %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}

// An agent whose token pins another CA than the server's gives up at
// once, saying why, instead of retrying.
func TestEnrollDistrustsServer(t *testing.T) {
	pk := newTestPKI(t)
	addr := pk.serve(t, serveSpeak)
	other, _, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newTestAgent(t, addr, nil)
	a.cfg.Token = pki.FormatEnrollToken(other.Fingerprint(), pki.NewTokenID(), pki.NewSecret())
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	_, err = a.enroll(ctx)
	if !errors.Is(err, ErrEnrollRefused) || !errors.Is(err, pki.ErrFingerprintMismatch) || !strings.Contains(err.Error(), "not trusting") {
		t.Errorf("enroll with a token of another CA: %v; want ErrEnrollRefused, not trusting the server, wrapping pki.ErrFingerprintMismatch", err)
	}
}

func TestRefusalHint(t *testing.T) {
	valid := &pki.Identity{NotAfter: time.Now().Add(time.Hour)}
	expired := &pki.Identity{NotAfter: time.Now().Add(-time.Hour)}
	for _, tt := range []struct {
		id      *pki.Identity
		verdict certVerdict
		want    string
	}{
		{valid, certUnknown, ""},
		{valid, certAccepted, ""},
		{valid, certRefused, "revoked or removed"},
		{valid, certCutOff, "revoked or removed"},
		{expired, certRefused, "token create --node edge-1"},
	} {
		if got := refusalHint(tt.id, "edge-1", tt.verdict); !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("hint for verdict %d with a certificate expiring %v = %q; want it to say %q", tt.verdict, tt.id.NotAfter, got, tt.want)
		}
	}
}

// The probe tells a server that refuses the node's certificate, by an
// alert or by closing the connection after the handshake, from one that
// accepts it and from one that is away.
func TestProbeCert(t *testing.T) {
	pk := newTestPKI(t)
	away := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	for _, tt := range []struct {
		name string
		addr string
		want certVerdict
	}{
		{"refused in the handshake", pk.serve(t, serveRefuse), certRefused},
		{"closed after the handshake", pk.serve(t, serveCutOff), certCutOff},
		{"accepted", pk.serve(t, serveSpeak), certAccepted},
		{"away", away, certUnknown},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, id := newTestAgent(t, tt.addr, pk)
			// Many times: the refusal must not depend on which of the
			// server's alert and its reset the agent sees first.
			for range 20 {
				if got := a.probeCert(context.Background(), a.servers.entries[0], id); got != tt.want {
					t.Fatalf("probeCert = %d; want %d", got, tt.want)
				}
			}
		})
	}
}

// A refused agent says why in its log, however the refusal reaches its
// stream: as a TLS alert, or as a connection closed right after the
// handshake, which its gRPC client reports as a broken pipe, a reset or
// EOF (tests/e2e TestNodeRevokeAndRemove saw the latter).
func TestRunHintsRefusal(t *testing.T) {
	pk := newTestPKI(t)
	for _, tt := range []struct {
		name  string
		serve serveMode
	}{
		{"alert", serveRefuse},
		{"closed after the handshake", serveCutOff},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out testenv.Buffer
			a, _ := newTestAgent(t, pk.serve(t, tt.serve), pk)
			a.log = slog.New(slog.NewTextHandler(&out, nil))
			defer runUntilReturn(t, a)()
			testenv.Eventually(t, within, "a hint in the agent's log that its certificate was refused", func() error {
				if !strings.Contains(out.String(), "revoked or removed") {
					return fmt.Errorf("no hint yet:\n%s", out.String())
				}
				return nil
			})
		})
	}
}

// Only sessions in a row that a listener took and did not welcome lead to
// probes, from the probeFrom-th; a welcome resets the count, and a refused
// dial (nobody listening) neither probes nor counts. Only cut-offs in a
// row make a hint.
func TestRefusalsCountCutOffsInARow(t *testing.T) {
	pk := newTestPKI(t)
	a, id := newTestAgent(t, pk.serve(t, serveCutOff), pk)
	ctx := context.Background()
	var r refusals
	for i, step := range []struct {
		welcomed, refused bool
		want              certVerdict
	}{
		{false, false, certUnknown}, // 1st unwelcomed: no probe
		{true, false, certUnknown},  // reset
		{false, false, certUnknown}, // 1st
		{false, true, certUnknown},  // refused: not counted
		{false, false, certUnknown}, // 2nd
		{false, false, certUnknown}, // 3rd: probe, first cut-off
		{false, false, certCutOff},  // second cut-off in a row
		{false, false, certCutOff},
	} {
		if got := r.after(ctx, a, a.servers.entries[0], id, step.welcomed, step.refused); got != step.want {
			t.Errorf("step %d (welcomed %v, refused %v): verdict %d; want %d", i, step.welcomed, step.refused, got, step.want)
		}
	}
}

// within bounds every wait: a bound on a hang, not a speed target.
const within = 30 * time.Second

// testPKI is a CA, a server certificate from it, and a node identity.
type testPKI struct {
	ca      *pki.CA
	server  tls.Certificate
	key     crypto.Signer
	certPEM []byte
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, _, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.ServerCertificate(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, csr := pkitest.NodeCSR(t)
	certPEM, err := ca.SignNode(csr, "n-test", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, server: server, key: key, certPEM: certPEM}
}

// serveMode is what a test agent endpoint does with a connection.
type serveMode int

const (
	// serveRefuse refuses every node certificate in the handshake, with
	// the server's own TLS configuration: an alert.
	serveRefuse serveMode = iota
	// serveCutOff closes the connection right after the handshake, as
	// the server's node gate does when it refuses a node after it.
	serveCutOff
	// serveSpeak accepts and writes a byte, as HTTP/2's settings.
	serveSpeak
)

// serve runs a TLS agent endpoint on loopback until the test ends, and
// returns its address.
func (p *testPKI) serve(t *testing.T, mode serveMode) string {
	t.Helper()
	check := func(string, int64) error { return nil }
	if mode == serveRefuse {
		check = func(id string, _ int64) error { return fmt.Errorf("node %s was revoked or removed", id) }
	}
	conf := pki.AgentServerTLS(pki.NewAuthority(pki.NewRoots(p.ca)), pki.NewServerCert(p.server), check)
	conf.NextProtos = []string{"h2"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer raw.Close()
				conn := tls.Server(raw, conf)
				_ = conn.SetDeadline(time.Now().Add(within))
				if err := conn.Handshake(); err != nil || mode != serveSpeak {
					return
				}
				if _, err := conn.Write([]byte{0}); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, conn)
			})
		}
	})
	return ln.Addr().String()
}

// newTestAgent is an agent of server addr with the node identity of p in
// its data directory, if p is not nil.
func newTestAgent(t *testing.T, addr string, p *testPKI) (*Agent, *pki.Identity) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Server, cfg.DataDir, cfg.Name, cfg.Runtime = addr, t.TempDir(), "edge-1", fakert.New()
	cfg.MaxBackoff = time.Second
	var id *pki.Identity
	if p != nil {
		var err error
		if id, err = pki.SaveIdentity(cfg.DataDir, p.key, p.certPEM, p.ca.CertPEM()); err != nil {
			t.Fatal(err)
		}
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, id
}

// runUntilReturn runs a until the returned function is called, which waits
// for Run to return and fails the test if Run failed.
func runUntilReturn(t *testing.T, a *Agent) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// An agent that finds nobody listening (the server restarting) retries
// within refusedBackoff however many times that happened: it is back
// within seconds of the server, even when MaxBackoff is long.
func TestRefusedDialRetriesSoon(t *testing.T) {
	pk := newTestPKI(t)
	a, _ := newTestAgent(t, testenv.FreeAddr(t), pk)
	var out testenv.Buffer
	clock := clockwork.NewFakeClock()
	a.log, a.clock, a.cfg.MaxBackoff = slog.New(slog.NewTextHandler(&out, nil)), clock, 30*time.Second
	defer runUntilReturn(t, a)()
	retry := regexp.MustCompile(`retry_in=(\S+)`)
	for k := 1; k <= 8; k++ {
		var waits [][]string
		testenv.Eventually(t, within, fmt.Sprintf("retry %d", k), func() error {
			if waits = retry.FindAllStringSubmatch(out.String(), -1); len(waits) < k {
				return fmt.Errorf("%d retries logged:\n%s", len(waits), out.String())
			}
			return nil
		})
		d, err := time.ParseDuration(waits[k-1][1])
		if err != nil || d > refusedBackoff {
			t.Fatalf("retry %d after a refused connection waits %s (%v); want at most %s", k, waits[k-1][1], err, refusedBackoff)
		}
		clock.Advance(refusedBackoff)
	}
}
