// Package agent is the dockfleet agent: it enrolls with a token, keeps one
// mTLS stream to the server, and reconciles the containers on its host with the
// desired state the server sends. It keeps its containers as they are while
// the server is away (static stability, DESIGN §4).
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/datadir"
	"github.com/dockfleet/dockfleet/internal/pki"
)

// Config configures an Agent. Start from DefaultConfig: New refuses what
// Validate refuses, and a zero interval is one of those.
type Config struct {
	// Server is the server's agent endpoint, "host:port" or
	// "https://host:port", or several of them, comma-separated: the
	// replicas of one server, which share its CA. A host that is a DNS
	// name is resolved at each connection attempt, and each address it
	// resolves to is an entry.
	Server string
	// Servers are more entries, after Server's (the --server flag given
	// several times). Each agent starts at a random entry, so a fleet
	// spreads evenly over them, and moves to the next when its server
	// goes away or tells it to (GoAway).
	Servers []string
	// Token is the enrollment token; needed only for the first start.
	Token string
	// CACertFile, if set, is trusted instead of the CA fingerprint in the token.
	CACertFile string
	// DataDir holds the agent's key, certificate and cached desired state.
	DataDir string
	// Name is the node name asked for at enrollment; "" means the hostname.
	Name string
	// Labels are the node labels asked for at enrollment; the token must
	// allow each.
	Labels map[string]string
	// Runtime runs the containers.
	Runtime Runtime
	// Logger takes the agent's messages; nil discards them.
	Logger *slog.Logger
	// ResyncInterval is how often the agent reconciles without a trigger.
	ResyncInterval time.Duration
	// MaxBackoff caps the wait between reconnection attempts.
	MaxBackoff time.Duration
	// Clock schedules everything the agent does in time: the resync and
	// heartbeat tickers, restart backoff, reconnection backoff and
	// certificate renewal; nil means the real clock. Certificates are still
	// checked against the real time, as TLS does.
	Clock clockwork.Clock

	// Hooks are seams for simulated agents and tests, not for operators.
	Hooks Hooks
}

// Hooks let simulated agents (internal/sim) report what benchmarks measure,
// and tests wait for what the agent did. They are called from the agent's
// goroutines, never after Run returned, and must return quickly; nil hooks
// are skipped.
type Hooks struct {
	// Dialer, if set, opens the connections to the server, for enrollment
	// and the stream, in place of gRPC's own dialer: simulated agents dial
	// from several loopback source addresses to get more ephemeral ports.
	// addr is the server's resolved "host:port".
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// LookupHost, if set, resolves the names of the --server entries in
	// place of net.DefaultResolver.LookupHost.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Rand, if set, returns a random int in [0, n) in place of
	// math/rand/v2.IntN, for the start entry and the wait after GoAway.
	Rand func(n int) int
	// OnConnected is called each time a server welcomes the agent on a
	// new stream, with the address it dialed ("host:port", an entry of
	// Config.Server resolved), and OnDisconnected when that stream ends,
	// with why: an error wrapping ErrGoAway if the server told the agent
	// to move.
	OnConnected    func(server string)
	OnDisconnected func(err error)
	// OnRenewed is called each time the agent renewed its certificate,
	// with the new one, once it is stored and in use.
	OnRenewed func(cert *x509.Certificate)
	// OnDesired is called each time the agent has taken a desired state from
	// the server and acked it, with its generation and number of instances.
	OnDesired func(generation uint64, instances int)
	// OnReconciled is called after each reconcile pass, with the number of
	// passes since Run started (1 for the first). A test that must see
	// that the agent left something alone waits for two passes after it:
	// the second began after the change.
	OnReconciled func(pass uint64)
	// HostUsage, if set, reports the host's CPU and memory use for the
	// heartbeats, in place of the agent's own reading of /proc (see
	// SharedHostUsage).
	HostUsage func() *agentproto.Usage
}

// ErrInvalidConfig is wrapped by every error of Config.Validate, so that a
// caller can tell a configuration to fix from a failure to retry.
var ErrInvalidConfig = errors.New("agent: invalid configuration")

// DefaultConfig is the configuration every agent starts from: the one
// source of the defaults of the agent command's flags, dockfleet dev and
// the simulator.
func DefaultConfig() Config {
	return Config{
		ResyncInterval: 10 * time.Second,
		MaxBackoff:     30 * time.Second,
	}
}

// Validate reports the first field of c that an agent cannot run with,
// naming the field and its flag.
func (c *Config) Validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	entries, err := parseServers(c.Server, c.Servers)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	switch {
	case len(entries) == 0:
		return invalid("--server is required (Config.Server): the server's agent address, HOST:PORT, or several, comma-separated")
	case c.DataDir == "":
		return invalid("--data-dir is required (Config.DataDir): the directory of the agent's key, certificate and state")
	case c.Runtime == nil:
		return invalid("Config.Runtime is nil: give the agent a container runtime")
	case c.ResyncInterval <= 0:
		return invalid("--resync must be above zero (Config.ResyncInterval is %s); the default is %s", c.ResyncInterval, DefaultConfig().ResyncInterval)
	case c.MaxBackoff <= 0:
		return invalid("Config.MaxBackoff must be above zero (it is %s); the default is %s", c.MaxBackoff, DefaultConfig().MaxBackoff)
	}
	return nil
}

// Agent is one node's agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	clock   clockwork.Clock
	servers *serverList
	// id is the node's identity now: its certificate changes when it is
	// renewed, and its roots when the server says (Trust). idMu
	// serializes the writes of its files.
	id   atomic.Pointer[pki.Identity]
	idMu sync.Mutex
	// dialRefused says that the last connection to the server was
	// refused: nobody listened.
	dialRefused atomic.Bool
}

// New checks cfg with Validate and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: no --name and no hostname: %w", err)
		}
		cfg.Name = h
	}
	entries, _ := parseServers(cfg.Server, cfg.Servers) // Validate checked them
	servers := newServerList(entries, cfg.Hooks.LookupHost, cfg.Hooks.Rand)
	return &Agent{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, servers: servers}, nil
}

// refusalHint says what to do when the server refuses the node's
// certificate, as far as Run can tell after a failed session: an expired
// certificate, or a server that refuses it (see refusals); "" otherwise.
func refusalHint(id *pki.Identity, name string, refused certVerdict) string {
	switch {
	// The real time, not the agent's clock: TLS checks certificates against it.
	case !time.Now().Before(id.NotAfter):
		return fmt.Sprintf("this node's certificate expired at %s: restart the agent with a token made by dockfleet token create --node %s (docs/operations.md)",
			id.NotAfter.Format(time.RFC3339), name)
	case refused == certRefused:
		return "the server refuses this node's certificate: the node was revoked or removed, or re-enrolled with another key (docs/operations.md)"
	case refused == certCutOff:
		return "the server closes every connection made with this node's certificate right after the handshake: it refuses the certificate if the node was revoked or removed, or re-enrolled with another key (docs/operations.md)"
	}
	return ""
}

// certVerdict is what a probe of the agent endpoint with the node's
// certificate found.
type certVerdict int

const (
	// certUnknown: the server could not be reached, or its answer says
	// nothing about the certificate.
	certUnknown certVerdict = iota
	// certAccepted: the server spoke HTTP/2 after the handshake.
	certAccepted
	// certRefused: the server sent a TLS alert refusing the certificate.
	certRefused
	// certCutOff: the server closed the connection right after the
	// handshake without a word, as it does when it refuses the node
	// after the handshake (internal/agentsvc/gate.go, Gate.track).
	certCutOff
)

// cutOffsForHint is how many cut-off probes in a row, with no session
// welcomed in between, make a refusal likely enough to say so.
const cutOffsForHint = 2

// refusals tells, across Run's attempts, whether the server refuses the
// node's certificate. The session's own error cannot tell: gRPC keeps only
// its text, and a TLS 1.3 client learns of the refusal after its handshake,
// so the alert that says it is often lost to the client's first write
// (broken pipe, connection reset, EOF). A probe that only reads sees it.
type refusals struct {
	unwelcomed int // sessions in a row that reached a listener and were not welcomed
	cutOffs    int // probes in a row that found certCutOff
}

// probeFrom is how many sessions in a row must end unwelcomed, though a
// listener took the connection, before a probe: a probe is one more TLS
// handshake for the server, and most reconnections after a server
// restart or an overload succeed within two attempts.
const probeFrom = 3

// after is the verdict on a session that ended with welcomed true if the
// server welcomed the agent in it. It probes only sessions the server did
// not welcome (a welcomed certificate was accepted) whose connection a
// listener took (refused means nobody listened, so nothing was checked).
func (r *refusals) after(ctx context.Context, a *Agent, ep endpoint, id *pki.Identity, welcomed, refused bool) certVerdict {
	if welcomed || !time.Now().Before(id.NotAfter) {
		r.unwelcomed, r.cutOffs = 0, 0
		return certUnknown
	}
	if refused {
		return certUnknown
	}
	if r.unwelcomed++; r.unwelcomed < probeFrom {
		return certUnknown
	}
	v := a.probeCert(ctx, ep, id)
	if v != certCutOff {
		r.cutOffs = 0
		return v
	}
	if r.cutOffs++; r.cutOffs < cutOffsForHint {
		return certUnknown
	}
	return certCutOff
}

// probeTimeout bounds a probe: a server that lets the agent connect answers
// at once, by an alert or by HTTP/2's settings.
const probeTimeout = 5 * time.Second

// probeCert connects to the agent endpoint with the node's certificate and
// reads the server's first words, writing nothing after the handshake: the
// server has nothing of the agent's unread when it refuses, so its alert
// arrives, not a reset.
func (a *Agent) probeCert(ctx context.Context, ep endpoint, id *pki.Identity) certVerdict {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var raw net.Conn
	var err error
	raw, err = a.dial(ctx, ep.addr)
	if err != nil {
		return certUnknown // the server is away
	}
	defer raw.Close()
	conf := pki.AgentClientTLS(id, ep.host)
	conf.NextProtos = []string{"h2"}
	conn := tls.Client(raw, conf)
	if err := conn.HandshakeContext(ctx); err != nil {
		// Under TLS 1.2 a server refuses in the handshake itself. Any
		// other failure, our refusing the server included, says
		// nothing of our certificate.
		if refusingAlert(err) {
			return certRefused
		}
		return certUnknown
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	_, err = conn.Read(make([]byte, 1))
	var netErr net.Error
	switch {
	case err == nil:
		return certAccepted
	case refusingAlert(err):
		return certRefused
	case errors.As(err, &netErr) && netErr.Timeout(), ctx.Err() != nil:
		return certUnknown
	}
	return certCutOff
}

// refusingAlerts are the TLS alerts with which a server refuses a client
// certificate; crypto/tls's server sends bad_certificate when its
// VerifyConnection refuses.
var refusingAlerts = []tls.AlertError{
	42,  // bad_certificate
	43,  // unsupported_certificate
	44,  // certificate_revoked
	45,  // certificate_expired
	46,  // certificate_unknown
	48,  // unknown_ca
	116, // certificate_required
}

// refusingAlert reports whether err is one of refusingAlerts received from
// the server. crypto/tls reports a received alert as a *net.OpError of Op
// "remote error" around an unexported type that reads as tls.AlertError
// does; a QUIC-style tls.AlertError is taken too.
func refusingAlert(err error) bool {
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return slices.Contains(refusingAlerts, alert)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	for _, a := range refusingAlerts {
		if op.Err.Error() == a.Error() {
			return true
		}
	}
	return false
}

// dialOptions adds the options every connection to the server shares to opts.
func (a *Agent) dialOptions(opts ...grpc.DialOption) []grpc.DialOption {
	return append(opts, grpc.WithContextDialer(a.dial))
}

// dial opens a connection to the server, through Hooks.Dialer if set, and
// notes whether nobody listened (dialRefused): gRPC keeps only the text of
// a dial's error.
func (a *Agent) dial(ctx context.Context, addr string) (net.Conn, error) {
	var conn net.Conn
	var err error
	if a.cfg.Hooks.Dialer != nil {
		conn, err = a.cfg.Hooks.Dialer(ctx, addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	a.dialRefused.Store(errors.Is(err, syscall.ECONNREFUSED))
	return conn, err
}

// Run enrolls if needed, then connects and reconciles until ctx ends. An
// enrollment refusal is returned; a lost server is retried for ever, with
// exponential backoff and jitter, while the containers keep running. It
// returns once every goroutine it started has ended: no hook is called
// after it.
func (a *Agent) Run(ctx context.Context) error {
	if err := datadir.Secure(a.cfg.DataDir, a.log); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	id, err := pki.LoadIdentity(a.cfg.DataDir)
	switch {
	case errors.Is(err, pki.ErrNoIdentity):
		id, err = a.enroll(ctx)
	case err == nil && a.cfg.Token != "" && !time.Now().Before(id.NotAfter):
		// An expired certificate cannot connect or renew; a token given
		// with it (one made with token create --node) re-enrolls the node.
		a.log.Warn("node certificate expired; enrolling again with the given token", "node_id", id.NodeID, "expired", id.NotAfter)
		id, err = a.enroll(ctx)
	}
	if err != nil {
		return err
	}
	a.id.Store(id)
	log := a.log.With("node_id", id.NodeID)
	log.Info("agent starting", "servers", a.servers.describe(), "cert_expires", id.NotAfter)

	rec := newReconciler(a.cfg.Runtime, id.NodeID, a.cfg.DataDir, a.cfg.ResyncInterval, a.clock, log)
	rec.onReconciled = a.cfg.Hooks.OnReconciled
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.run(ctx)
	}()
	defer func() { <-done }()

	pulls := newPuller(a.cfg.Runtime)
	retry := newRounds(a.cfg.MaxBackoff)
	var refused refusals
	for {
		ep, n := a.servers.pick(ctx, a.clock.Now())
		connected, err := a.session(ctx, ep, rec, pulls, log)
		if ctx.Err() != nil {
			return nil
		}
		id = a.identity()
		if connected {
			retry.reset()
		}
		dialRefused := a.dialRefused.Load()
		wait := retry.failed(n, dialRefused)
		var away *goAwayError
		if errors.As(err, &away) {
			// The server spoke: it took the certificate.
			refused.after(ctx, a, ep, id, true, false)
			msg := "server asked the agent to move; it has no other server, and retries this one"
			if a.servers.goAway(ep.addr, a.clock.Now().Add(avoidAfterGoAway), n) {
				msg = "server asked the agent to move to another server"
				// A server's agents leave it at random times within
				// what it asked, so that they do not land on the others
				// at once; one that could not even start its session
				// there (overloaded) backs off as from a failure too, so
				// a fleet whose servers are all full does not spin.
				moveIn := a.servers.upTo(away.within)
				if !connected {
					moveIn = max(moveIn, wait)
				}
				wait = moveIn
			}
			log.Info(msg, "server", ep.addr, "reason", away.reason,
				"servers", n, "retry_in", wait.Round(time.Millisecond))
			if !a.wait(ctx, wait) {
				return nil
			}
			continue
		}
		args := []any{"server", ep.addr, "err", err, "retry_in", wait.Round(time.Millisecond)}
		if hint := refusalHint(id, a.cfg.Name, refused.after(ctx, a, ep, id, connected, dialRefused)); hint != "" {
			args = append(args, "hint", hint)
		}
		log.Warn("server connection lost; retrying", args...)
		if !a.wait(ctx, wait) {
			return nil
		}
	}
}

// refusedBackoff caps the wait after a connection nobody accepted
// (connection refused): the server is restarting, and an attempt costs it
// nothing, so an agent comes back within seconds of it however many
// restarts it met. A server that accepts but fails or limits connections
// is backed off from up to MaxBackoff: that is the load to spread.
const refusedBackoff = 2 * time.Second

// wait waits d on the agent's clock and reports whether ctx is still live.
func (a *Agent) wait(ctx context.Context, d time.Duration) bool {
	t := a.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}

// jittered is how long to wait before a retry whose backoff is backoff:
// "full jitter", anything up to it. A fleet that lost its server, or a
// crowd of agents enrolling at once over a server's limit, then comes back
// spread out instead of in waves that are refused together. It waits at
// least minWait, so a retry never spins, and never more than backoff, the
// bound callers promise (refusedBackoff).
func jittered(backoff time.Duration) time.Duration {
	if backoff <= minWait {
		return minWait
	}
	return minWait + time.Duration(rand.Int64N(int64(backoff-minWait)))
}

// minWait is the shortest wait before a retry.
const minWait = 100 * time.Millisecond
