package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/sparselog"
)

// The listeners' connection limits keep unauthenticated clients from
// taking the open files the fleet and the API need: both listeners, the
// store and every agent stream share one process's RLIMIT_NOFILE.
//
//   - The REST API holds at most Config.APIConnsPerSource connections
//     from one source address (source: an IPv4 address or an IPv6 /64);
//     one more is closed as soon as it is accepted, before its TLS
//     handshake. Its http.Server's timeouts (listen) close the idle ones.
//   - The agent endpoint holds at most Config.AgentCertlessConnsPerSource
//     connections without a client certificate (enrolling agents, or
//     anyone) from one source, each for certlessConnLifetime at most:
//     enrollment is one call on a connection of its own. Connections with
//     a certificate, the fleet's streams, are not counted, so any number
//     of enrolled agents behind one NAT reconnect as before.

// Defaults of Config's connection caps.
const (
	// DefaultAPIConnsPerSource is Nomad's http_max_conns_per_client: far
	// more than the CLI, a dashboard and scripts of one host hold.
	DefaultAPIConnsPerSource = 100
	// DefaultAgentCertlessConnsPerSource lets a site's agents enroll a
	// few dozen at once; the others back off and retry within seconds.
	DefaultAgentCertlessConnsPerSource = 32
)

// certlessConnLifetime is how long a connection without a client
// certificate may stay open on the agent endpoint: an enrollment takes
// one round trip. A variable so that tests can shorten it.
var certlessConnLifetime = 30 * time.Second

// connCounter counts the open connections of each source and refuses one
// over max.
type connCounter struct {
	max int

	mu    sync.Mutex
	conns map[netip.Addr]int
}

func newConnCounter(max int) *connCounter {
	return &connCounter{max: max, conns: map[netip.Addr]int{}}
}

// acquire counts one more connection from src unless it holds max already.
func (c *connCounter) acquire(src netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns[src] >= c.max {
		return false
	}
	c.conns[src]++
	return true
}

func (c *connCounter) release(src netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns[src]--; c.conns[src] <= 0 {
		delete(c.conns, src)
	}
}

// countedConn gives its count back once, when it is closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// capListener closes, as soon as it accepts it, a connection from a
// source that holds its cap of connections already.
type capListener struct {
	net.Listener
	counter *connCounter
	log     *sparselog.Log
}

func newCapListener(ln net.Listener, max int, log *slog.Logger) *capListener {
	return &capListener{Listener: ln, counter: newConnCounter(max), log: sparselog.New(log, agentsvc.LimitLogInterval)}
}

func (ln *capListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := agentsvc.Source(c.RemoteAddr())
		if ln.counter.acquire(src) {
			return &countedConn{Conn: c, release: func() { ln.counter.release(src) }}, nil
		}
		ln.log.Warn("closing a new API connection: its source address holds its cap of connections",
			"source", src, "max_conns_per_source", ln.counter.max)
		c.Close()
	}
}

// certlessCreds wraps the agent endpoint's TLS credentials: a connection
// whose client sent no certificate is counted against its source's cap,
// refused over it, and closed after certlessConnLifetime.
type certlessCreds struct {
	credentials.TransportCredentials
	counter *connCounter
	log     *sparselog.Log
}

func newCertlessCreds(creds credentials.TransportCredentials, max int, log *slog.Logger) *certlessCreds {
	return &certlessCreds{TransportCredentials: creds, counter: newConnCounter(max), log: sparselog.New(log, agentsvc.LimitLogInterval)}
}

func (c *certlessCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, auth, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	if info, ok := auth.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
		return conn, auth, nil
	}
	src := agentsvc.Source(raw.RemoteAddr())
	if !c.counter.acquire(src) {
		conn.Close()
		c.log.Warn("closing a new agent connection without a client certificate: its source address holds its cap of them",
			"source", src, "max_certless_conns_per_source", c.counter.max)
		return nil, nil, fmt.Errorf("%s holds %d connections without a client certificate already", src, c.counter.max)
	}
	var timer *time.Timer
	cc := &countedConn{Conn: conn, release: func() {
		timer.Stop()
		c.counter.release(src)
	}}
	// Closing the connection under gRPC ends its transport, and any call
	// still on it; the timer's goroutine exists only when it fires.
	timer = time.AfterFunc(certlessConnLifetime, func() { cc.Close() })
	return cc, auth, nil
}

func (c *certlessCreds) Clone() credentials.TransportCredentials {
	return &certlessCreds{TransportCredentials: c.TransportCredentials.Clone(), counter: c.counter, log: c.log}
}
