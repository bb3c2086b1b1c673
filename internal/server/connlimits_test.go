package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/dockfleet/dockfleet/internal/sim"
)

// holdH2 holds an HTTP/2 connection over c open as a patient client
// does: it sends the preface and its settings, answers the server's PINGs
// and, unless every is zero, sends a PING of its own every so often; it
// never makes a request. The returned channel is closed once the server
// closed the connection.
func holdH2(c net.Conn, every time.Duration) <-chan struct{} {
	closed := make(chan struct{})
	var mu sync.Mutex // the framer allows one writer at a time
	fr := http2.NewFramer(c, c)
	write := func(f func() error) error {
		mu.Lock()
		defer mu.Unlock()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return f()
	}
	go func() {
		defer close(closed)
		if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
			return
		}
		if write(func() error { return fr.WriteSettings() }) != nil {
			return
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					write(fr.WriteSettingsAck)
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					write(func() error { return fr.WritePing(true, f.Data) })
				}
			case *http2.GoAwayFrame:
				return
			}
		}
	}()
	if every == 0 {
		return closed
	}
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-closed:
				return
			case <-tick.C:
				write(func() error { return fr.WritePing(false, [8]byte{1}) })
			}
		}
	}()
	return closed
}

// dialTLS dials addr from src and makes a TLS handshake offering proto
// (ALPN) and no client certificate. It returns nil when the connection
// or the handshake failed within 5s, ample for a server not out of files.
func dialTLS(t *testing.T, src, addr, proto string) *tls.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := dialFrom(src)(ctx, addr)
	if err != nil {
		return nil
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}}) //nolint:gosec // the abuser trusts anything
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// holdMany opens n HTTP/2 connections to addr from src, fifty at a time,
// and holds those the server took as holdH2 does. It returns their
// channels, closed when the server closes them.
func holdMany(t *testing.T, src, addr string, n int, every time.Duration) []<-chan struct{} {
	var mu sync.Mutex
	var held []<-chan struct{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if c := dialTLS(t, src, addr, "h2"); c != nil {
				mu.Lock()
				held = append(held, holdH2(c, every))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return held
}

// stillOpen counts the channels of held not closed by deadline.
func stillOpen(held []<-chan struct{}, deadline time.Time) int {
	open := 0
	for _, closed := range held {
		if !waitClosed(closed, time.Until(deadline)) {
			open++
		}
	}
	return open
}

// waitClosed reports whether closed is closed within d.
func waitClosed(closed <-chan struct{}, d time.Duration) bool {
	select {
	case <-closed:
		return true
	default:
	}
	select {
	case <-closed:
		return true
	case <-time.After(d):
		return false
	}
}

// Idle unauthenticated connections are closed, however patient the
// client: an HTTP/2 connection to the API that answers and sends PINGs,
// an HTTP/1.1 one after a request, and a connection to the agent endpoint
// without a client certificate. The fleet's streams, which have one,
// outlive that connection lifetime (review finding 3: all were kept).
func TestIdleUnauthenticatedConnectionsAreClosed(t *testing.T) {
	oldIdle, oldLifetime := apiIdleTimeout, certlessConnLifetime
	apiIdleTimeout, certlessConnLifetime = time.Second, time.Second
	t.Cleanup(func() { apiIdleTimeout, certlessConnLifetime = oldIdle, oldLifetime })
	f := startAbuseFleet(t, Config{})
	f.startGoodAgents(t)

	const src = "127.0.0.10"
	apiAddr := f.srv.apiLn.Addr().String()
	apiH2 := dialTLS(t, src, apiAddr, "h2")
	agentH2 := dialTLS(t, src, f.srv.AgentAddr(), "h2")
	if apiH2 == nil || agentH2 == nil {
		t.Fatal("a TLS handshake failed; want the server to take one connection of each")
	}
	// The agent endpoint allows a client's PING every 10s at most.
	apiClosed, agentClosed := holdH2(apiH2, 100*time.Millisecond), holdH2(agentH2, 0)

	api1 := dialTLS(t, src, apiAddr, "http/1.1")
	if api1 == nil {
		t.Fatal("the TLS handshake of an HTTP/1.1 connection failed")
	}
	api1.Write([]byte("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"))
	br := bufio.NewReader(api1)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/health over HTTP/1.1: %v, %v", resp, err)
	}
	resp.Body.Close()
	api1Closed := make(chan struct{})
	go func() {
		defer close(api1Closed)
		api1.SetReadDeadline(time.Now().Add(time.Minute))
		br.ReadByte()
	}()

	f.checkGoodAgents(t) // longer than the idle timeout and the lifetime
	for _, c := range []struct {
		what   string
		closed <-chan struct{}
	}{
		{"an idle HTTP/2 connection to the API that answers PINGs", apiClosed},
		{"an idle HTTP/1.1 connection to the API after one request", api1Closed},
		{"an HTTP/2 connection to the agent endpoint without a client certificate", agentClosed},
	} {
		if !waitClosed(c.closed, 20*time.Second) {
			t.Errorf("the server kept %s open for 20s past its 1s idle timeout or lifetime; want it closed", c.what)
		}
	}
}

// A source holds at most its cap of API connections and of certificate-
// less agent connections; the ones over it are closed at once, and the
// server says so sparsely. Enrolled agents behind one address are not
// held to the certificate-less cap: the twenty good agents enroll
// through a cap of 5 and then hold twenty streams.
func TestConnectionCapsPerSource(t *testing.T) {
	cfg := Config{APIConnsPerSource: 20, AgentCertlessConnsPerSource: 5}
	began := time.Now()
	f := startAbuseFleet(t, cfg)
	f.startGoodAgents(t)

	const src, tries = "127.0.0.10", 60
	for _, l := range []struct {
		what, addr string
		max        int
		every      time.Duration
	}{
		{"API", f.srv.apiLn.Addr().String(), cfg.APIConnsPerSource, 100 * time.Millisecond},
		{"agent endpoint", f.srv.AgentAddr(), cfg.AgentCertlessConnsPerSource, 0},
	} {
		held := holdMany(t, src, l.addr, tries, l.every)
		// Closed over the cap: at the handshake (API), or at once after it.
		if open := stillOpen(held, time.Now().Add(2*time.Second)); open != l.max {
			t.Errorf("%s: %d of %d connections from one source still open after 2s; want its cap, %d", l.what, open, tries, l.max)
		}
	}
	f.checkGoodAgents(t)
	if err := f.api.Health(context.Background()); err != nil {
		t.Errorf("health from another source while the abuser holds its caps: %v", err)
	}
	elapsed := time.Since(began)
	for _, msg := range []string{"closing a new API connection", "closing a new agent connection without a client certificate"} {
		if n := f.countLines(msg); n < 1 || n > maxLogLines(elapsed) {
			t.Errorf("the server logged %q %d times in %s; want 1 to %d", msg, n, elapsed.Round(time.Second), maxLogLines(elapsed))
		}
	}
}

// TestEnrollmentCrowdThroughTheCap enrolls a crowd of agents behind one
// address (a site's NAT) through a small cap of connections without a
// certificate. An agent that kept its refused connection between attempts
// reconnected by itself while it backed off and held a slot idle: at the
// default cap, 1,000 simulated agents took 98 s to enroll instead of 7 s
// (BENCHMARKS.md). Each attempt now has a connection of its own.
func TestEnrollmentCrowdThroughTheCap(t *testing.T) {
	const crowd, slots = 60, 4
	f := startAbuseFleet(t, Config{AgentCertlessConnsPerSource: slots})
	began := time.Now()
	r := f.runSim(t, sim.Config{Agents: crowd, NamePrefix: "site", Ramp: crowd, SourceIPs: []string{"127.0.0.11"}})
	f.waitReady(t, r, "site-", crowd)
	t.Logf("%d agents enrolled through %d slots in %s", crowd, slots, time.Since(began).Round(time.Millisecond))
}
