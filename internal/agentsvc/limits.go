package agentsvc

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/dockfleet/dockfleet/internal/sparselog"
)

// Defaults of LimitsConfig, and of server.Config's agent endpoint limits.
// A source's burst lets the agents behind one address (a site's NAT) all
// reconnect at once after a server restart; its rate refills the burst in
// ten seconds and holds a client that reconnects in a tight loop to about 100 TLS handshakes a
// second, a few percent of one core. A stream's burst covers a rollout
// that replaces a hundred containers of one host at once, a few statuses
// each; its rate is hundreds of times an agent's steady heartbeat.
const (
	DefaultSourceRate   = 100
	DefaultSourceBurst  = 1000
	DefaultMessageRate  = 100
	DefaultMessageBurst = 1000
)

const (
	// EnrollFailureBurst and EnrollFailureRate bound the failed
	// enrollments of one source address: ten, then ten a minute.
	EnrollFailureBurst = 10
	EnrollFailureRate  = rate.Limit(1.0 / 6)
	// LimitLogInterval is how often each kind of refusal is logged at
	// most: a flood must not turn into a flood of log lines.
	LimitLogInterval = 10 * time.Second
	// sourceSweepInterval is how often the buckets of idle source
	// addresses are forgotten.
	sourceSweepInterval = time.Minute
)

// LimitsConfig sets the limits of one source address and of one node; see
// Limits. Each field must be positive.
type LimitsConfig struct {
	SourceRate   float64
	SourceBurst  int
	MessageRate  float64
	MessageBurst int
}

// Limits holds the agent endpoint's limits, which keep one broken or
// hostile agent, or one source address, from slowing the others down:
//
//   - a message weighs at most the server's maxAgentMessage: gRPC refuses
//     a larger one with ResourceExhausted before reading it, which ends
//     that stream only;
//   - a node may send LimitsConfig.MessageBurst messages at once and
//     LimitsConfig.MessageRate a second after, over all its streams: a
//     node that reconnects finds its budget as it left it. A stream over
//     it is closed with ResourceExhausted;
//   - the strings a node sends are cut to a bound and their control
//     characters escaped before they are kept (cleanMessage);
//   - a source address may open LimitsConfig.SourceBurst connections at once
//     and LimitsConfig.SourceRate a second after, and start as many calls.
//     A connection over it is reset as soon as it is accepted, before the
//     TLS handshake that is most of a connection's cost to the server; a
//     call over it is refused with ResourceExhausted before it starts;
//   - a source address whose enrollments failed EnrollFailureBurst times
//     (bad, revoked, expired or used-up tokens) is refused further
//     enrollments, with ResourceExhausted, until its failures age out at
//     EnrollFailureRate: a flood of guessed tokens costs the server little,
//     and other addresses enroll as usual.
//
// Agents retry what is refused with ResourceExhausted or a reset
// connection, with exponential backoff.
type Limits struct {
	conns          *sourceLimiter[netip.Addr]
	calls          *sourceLimiter[netip.Addr]
	enrollFailures *sourceLimiter[netip.Addr]
	messages       *sourceLimiter[string] // by node ID

	connLog, callLog, messageLog, enrollLog, textLog *sparselog.Log
}

// NewLimits makes the limits of cfg; log says, sparsely, what they refuse.
func NewLimits(cfg LimitsConfig, log *slog.Logger) *Limits {
	return &Limits{
		conns:          newSourceLimiter[netip.Addr](rate.Limit(cfg.SourceRate), cfg.SourceBurst),
		calls:          newSourceLimiter[netip.Addr](rate.Limit(cfg.SourceRate), cfg.SourceBurst),
		enrollFailures: newSourceLimiter[netip.Addr](EnrollFailureRate, EnrollFailureBurst),
		messages:       newSourceLimiter[string](rate.Limit(cfg.MessageRate), cfg.MessageBurst),
		connLog:        sparselog.New(log, LimitLogInterval),
		callLog:        sparselog.New(log, LimitLogInterval),
		messageLog:     sparselog.New(log, LimitLogInterval),
		enrollLog:      sparselog.New(log, LimitLogInterval),
		textLog:        sparselog.New(log, LimitLogInterval),
	}
}

// Listener wraps the agent listener with the per-source connection limit.
func (l *Limits) Listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, limits: l}
}

// Tap refuses a call from a source address over its rate before gRPC
// makes a stream of it (grpc.InTapHandle).
func (l *Limits) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	src := peerSource(ctx)
	if l.calls.allow(src) {
		return ctx, nil
	}
	l.callLog.Warn("refusing an agent call: its source address is over its call rate",
		"source", src, "method", info.FullMethodName, "rate", float64(l.calls.limit), "burst", l.calls.burst)
	return nil, status.Errorf(codes.ResourceExhausted,
		"too many calls from %s: the server takes %d at once and %g a second after from one address; retry later",
		src, l.calls.burst, float64(l.calls.limit))
}

// message takes one message from nodeID's budget. It returns nil, or the
// status that closes the stream when the node is over its message rate.
// The budget is the node's, not the stream's: reconnecting does not
// refill it.
func (l *Limits) message(nodeID string) error {
	m := l.messages
	if m.allow(nodeID) {
		return nil
	}
	l.messageLog.Warn("closing an agent stream: its node sent messages over its rate",
		"node_id", nodeID, "rate", float64(m.limit), "burst", m.burst)
	return status.Errorf(codes.ResourceExhausted,
		"this node sent more than %d messages at once or %g a second after, over all its streams, more than a healthy agent sends; the server closed the stream",
		m.burst, float64(m.limit))
}

// enrollBlocked returns the status refusing an enrollment from the source
// of ctx after too many failures, or nil when it may try.
func (l *Limits) enrollBlocked(ctx context.Context) error {
	src := peerSource(ctx)
	if !l.enrollFailures.empty(src) {
		return nil
	}
	l.enrollLog.Warn("refusing enrollments from a source address after repeated failures", "source", src)
	return status.Errorf(codes.ResourceExhausted,
		"too many failed enrollments from %s; check the token (dockfleet token create) and retry in a minute", src)
}

// enrollFailed counts a failed enrollment against the source of ctx.
func (l *Limits) enrollFailed(ctx context.Context) {
	l.enrollFailures.allow(peerSource(ctx))
}

// limitedListener resets new connections from a source address over its
// connection rate as soon as they are accepted.
type limitedListener struct {
	net.Listener
	limits *Limits
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src, conns := Source(c.RemoteAddr()), ln.limits.conns
		if conns.allow(src) {
			return c, nil
		}
		ln.limits.connLog.Warn("resetting a new agent connection: its source address is over its connection rate",
			"source", src, "rate", float64(conns.limit), "burst", conns.burst)
		// A reset rather than a FIN: the server keeps no TIME_WAIT
		// state for connections it refuses.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Source is the address a limit counts a connection against: its IPv4
// address, or the /64 of its IPv6 address, as one host or site usually
// holds a whole /64. Addresses other than TCP's share the zero address.
func Source(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

// peerSource is the source address of the call of ctx.
func peerSource(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return netip.Addr{}
	}
	return Source(p.Addr)
}

// sourceLimiter keeps a token bucket for each source: an address, or a
// node ID. A bucket that has filled up again is forgotten, as it is the
// same as a new one, so idle or departed sources cost nothing.
type sourceLimiter[K comparable] struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[K]*rate.Limiter
	swept   time.Time
}

func newSourceLimiter[K comparable](limit rate.Limit, burst int) *sourceLimiter[K] {
	return &sourceLimiter[K]{limit: limit, burst: burst, buckets: map[K]*rate.Limiter{}, swept: time.Now()}
}

// allow takes a token from src's bucket and reports whether there was one.
func (l *sourceLimiter[K]) allow(src K) bool {
	l.mu.Lock()
	l.sweep()
	b := l.buckets[src]
	if b == nil {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[src] = b
	}
	l.mu.Unlock()
	return b.Allow()
}

// empty reports whether src's bucket has no whole token left.
func (l *sourceLimiter[K]) empty(src K) bool {
	l.mu.Lock()
	b := l.buckets[src]
	l.mu.Unlock()
	return b != nil && b.Tokens() < 1
}

// sweep forgets the full buckets, at most once a sourceSweepInterval; l.mu is held.
func (l *sourceLimiter[K]) sweep() {
	now := time.Now()
	if now.Sub(l.swept) < sourceSweepInterval {
		return
	}
	l.swept = now
	for src, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, src)
		}
	}
}
