// Package agent is the dockfleet agent: it enrolls with a token, keeps one
// mTLS stream to the server, and reconciles the containers on its host with the
// desired state the server sends. It keeps its containers as they are while
// the server is away (static stability, DESIGN §4).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
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
	// Server is the server's agent endpoint, "host:port" or "https://host:port".
	Server string
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
	// OnConnected is called each time the server welcomes the agent on a
	// new stream, and OnDisconnected when that stream ends, with why.
	OnConnected    func()
	OnDisconnected func(err error)
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
	switch {
	case c.Server == "":
		return invalid("--server is required (Config.Server): the server's agent address, HOST:PORT")
	case c.DataDir == "":
		return invalid("--data-dir is required (Config.DataDir): the directory of the agent's key, certificate and state")
	case c.Runtime == nil:
		return invalid("Config.Runtime is nil: give the agent a container runtime")
	case c.ResyncInterval <= 0:
		return invalid("--resync must be above zero (Config.ResyncInterval is %s); the default is %s", c.ResyncInterval, DefaultConfig().ResyncInterval)
	case c.MaxBackoff <= 0:
		return invalid("Config.MaxBackoff must be above zero (it is %s); the default is %s", c.MaxBackoff, DefaultConfig().MaxBackoff)
	}
	if _, _, err := parseServer(c.Server); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Agent is one node's agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	clock clockwork.Clock
	addr  string // host:port of the agent endpoint
	host  string // the server name its certificate must carry
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
	addr, host, _ := parseServer(cfg.Server) // Validate checked it
	return &Agent{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, addr: addr, host: host}, nil
}

// refusalHint says what to do when the server refuses the node's
// certificate, which the agent sees only as a TLS alert; "" otherwise.
func refusalHint(err error, id *pki.Identity, name string) string {
	switch {
	// The real time, not the agent's clock: TLS checks certificates against it.
	case !time.Now().Before(id.NotAfter):
		return fmt.Sprintf("this node's certificate expired at %s: restart the agent with a token made by dockfleet token create --node %s (docs/operations.md)",
			id.NotAfter.Format(time.RFC3339), name)
	case strings.Contains(err.Error(), "tls: bad certificate"):
		return "the server refuses this node's certificate: the node was revoked or removed, or re-enrolled with another key (docs/operations.md)"
	}
	return ""
}

// dialOptions adds the options every connection to the server shares to opts.
func (a *Agent) dialOptions(opts ...grpc.DialOption) []grpc.DialOption {
	if a.cfg.Hooks.Dialer != nil {
		opts = append(opts, grpc.WithContextDialer(a.cfg.Hooks.Dialer))
	}
	return opts
}

// parseServer accepts "host:port", "https://host:port" or "grpcs://host:port".
func parseServer(s string) (addr, host string, err error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", "", fmt.Errorf("--server %q is not a host:port or https://host:port address", s)
		}
		s = u.Host
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return "", "", fmt.Errorf("--server %q must name a host and port, e.g. 10.0.0.5:7401", s)
	}
	if host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port), host, nil
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
	log := a.log.With("node_id", id.NodeID)
	log.Info("agent starting", "server", a.addr, "cert_expires", id.NotAfter)

	rec := newReconciler(a.cfg.Runtime, id.NodeID, a.cfg.DataDir, a.cfg.ResyncInterval, a.clock, log)
	rec.onReconciled = a.cfg.Hooks.OnReconciled
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.run(ctx)
	}()
	defer func() { <-done }()

	pulls := newPuller(a.cfg.Runtime)
	backoff := time.Second
	for {
		connected, err := a.session(ctx, id, rec, pulls, log)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errRenewed) {
			if id, err = pki.LoadIdentity(a.cfg.DataDir); err != nil {
				return fmt.Errorf("loading renewed identity: %w", err)
			}
			continue
		}
		if connected {
			backoff = time.Second
		}
		wait := jittered(backoff)
		args := []any{"err", err, "retry_in", wait.Round(time.Millisecond)}
		if hint := refusalHint(err, id, a.cfg.Name); hint != "" {
			args = append(args, "hint", hint)
		}
		log.Warn("server connection lost; retrying", args...)
		if !a.wait(ctx, wait) {
			return nil
		}
		backoff = min(backoff*2, a.cfg.MaxBackoff)
	}
}

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
// spread out instead of in waves that are refused together.
func jittered(backoff time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(backoff))) + 100*time.Millisecond
}
