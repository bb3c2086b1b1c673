// Package server is dockfleet's control plane: the listeners of the REST API
// for the CLI (served by package restapi) and of the endpoint agents stream
// to (served by package agentsvc), the built-in CA,
// and the wiring of the controllers that place instances and track node
// liveness.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/datadir"
	"github.com/dockfleet/dockfleet/internal/debugsrv"
	"github.com/dockfleet/dockfleet/internal/httpguard"
	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/restapi"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// Config configures a Server. DefaultConfig holds every default. New
// fills a field left at its zero value from DefaultConfig, so an embedder
// sets only what it changes; it refuses a value that is set but invalid
// (Validate), such as a negative interval, rather than replacing it.
type Config struct {
	// ReplicaID names this server among the replicas of its store (on
	// PostgreSQL); default its host name and a random part.
	ReplicaID string
	// DataDir holds the key file (unless KeyFile is elsewhere), a copy
	// of the CA certificate, this replica's server certificate,
	// admin.token and, when Store is empty, the store.
	DataDir string
	// Store is where the state is kept (store.Open): empty for SQLite in
	// DataDir, sqlite:PATH, or a PostgreSQL URL (postgres://…) or
	// keyword/value DSN.
	Store string
	// KeyFile is the key file that seals the secrets every replica of
	// the store shares (the CA key, the admin token); every replica must
	// be given the same one. Default DataDir/store.key, created on first
	// start when the store holds no sealed secret yet.
	KeyFile string
	// APIAddr is the HTTPS REST API listener; default 127.0.0.1:7400.
	APIAddr string
	// AgentAddr is the agents' gRPC (mTLS) listener; default :7401.
	AgentAddr string
	// ExpectedAgents is how many agents the server should hold; it warns
	// at start when its open-file limit is too low for them, or for its
	// enrolled nodes if there are more. Zero: the enrolled nodes.
	ExpectedAgents int
	// Hosts are extra DNS names or IPs for the server certificate.
	Hosts []string
	// HeartbeatInterval is how often agents send heartbeats; default 5s.
	HeartbeatInterval time.Duration
	// MissedHeartbeats is how many missed heartbeats make a node unreachable; default 3.
	MissedHeartbeats int
	// RescheduleAfter is how long a replicated instance stays on an
	// unreachable node before it is placed elsewhere; default 1m.
	RescheduleAfter time.Duration
	// DebugAddr, if set, serves Go's pprof profiles (/debug/pprof/) on a
	// plain HTTP listener with no authentication: a loopback address,
	// unless DebugAllowRemote.
	DebugAddr        string
	DebugAllowRemote bool
	// PrePullParallelism caps how many nodes pull a rollout's image at once
	// in its pre-pull phase; default 50.
	PrePullParallelism int
	// MaxTokenTTL is the longest lifetime an enrollment token may be made
	// for; default DefaultMaxTokenTTL.
	MaxTokenTTL time.Duration
	// NodeCertTTL is the lifetime of the client certificates agents get; default 30 days.
	NodeCertTTL time.Duration
	// AgentSourceRate and AgentSourceBurst limit what one source address
	// may start on the agent endpoint: AgentSourceBurst new connections
	// at once and AgentSourceRate a second after that, and as many calls
	// (Enroll, Connect, Renew). A connection over the limit is reset
	// before its TLS handshake and a call is refused with
	// ResourceExhausted; agents retry both with backoff. Agents behind
	// one NAT share an address (an IPv6 source counts by its /64), so the
	// burst is how many of them may all reconnect at once, as they do
	// after a server restart. Defaults 100 a second and 1,000.
	AgentSourceRate  float64
	AgentSourceBurst int
	// AgentMessageRate and AgentMessageBurst limit the messages of one
	// agent, over all its streams: AgentMessageBurst at once and
	// AgentMessageRate a second after that; a stream over them is closed
	// with ResourceExhausted, and a new one finds the budget as it was. A healthy agent sends a heartbeat every
	// HeartbeatInterval and, in a rollout, a few statuses for each
	// instance it replaces: a few hundred at once on a busy host.
	// Defaults 100 a second and 1,000.
	AgentMessageRate  float64
	AgentMessageBurst int
	// ImagePolicy is the image policy of the deployments whose spec names
	// none (spec.imagePolicy); default pinFromNodes.
	ImagePolicy spec.ImagePolicy
	// RegistryAllow, when not empty, lists the registries (host or
	// host:port; docker.io for Docker Hub) images may come from: an apply
	// naming another is refused, and the server contacts no other.
	RegistryAllow []string
	// Resolve asks an image's registry for the digest its tag names now;
	// default registry.Resolve. Tests give a resolver that asks no public
	// registry.
	Resolve func(ctx context.Context, image string) (string, error)
	// APIConnsPerSource caps the REST API connections one source address
	// holds at once; one more is closed when accepted. Default 100.
	APIConnsPerSource int
	// APISourceRate and APISourceBurst limit the REST API requests of one
	// source address (an IPv6 source counts by its /64): APISourceBurst at
	// once and APISourceRate a second after; one more is answered 429 with
	// Retry-After. GET /v1/health is not counted. Defaults 50 a second and
	// 200 (package httpguard).
	APISourceRate  float64
	APISourceBurst int
	// SessionTTL is how long a login lasts; default 12h.
	SessionTTL time.Duration
	// AuditFile, if set, gets a copy of every audit record this replica
	// writes, one JSON object per line, for a SIEM.
	AuditFile string
	// OIDC, when its Issuer is set, lets users log in by single sign-on
	// with the identity provider's ID tokens (docs/access.md).
	OIDC oidcauth.Config
	// OIDCClient reaches the identity provider; nil is the default client
	// with the system's trusted roots (tests give one trusting theirs).
	OIDCClient *http.Client
	// AgentCertlessConnsPerSource caps the agent endpoint connections
	// without a client certificate (enrolling agents) one source address
	// holds at once; each lasts 30s at most. Default 32.
	AgentCertlessConnsPerSource int
	// MaxAgents, if above zero, caps the agents this server holds at once:
	// one more is told to connect to another server (GoAway, "overloaded").
	// Zero: no cap.
	MaxAgents int
	// DrainAgentsWithin is how long a server that stops gracefully gives
	// its agents to move to another server: it tells each to go (GoAway)
	// within a random time up to it, and waits up to it for them to leave
	// before it cuts off the rest. Default 10s.
	DrainAgentsWithin time.Duration
	// RevisionHistory is how many of its newest revisions a deployment
	// keeps; older ones go, but for those its stable revision, an active
	// rollout or an instance still uses. Default 50.
	RevisionHistory int
	// EventRetention is how long events are kept, and MaxEvents how many
	// of the newest at most. Defaults 30 days and 100,000.
	EventRetention time.Duration
	MaxEvents      int
	Logger         *slog.Logger
	// Clock is the time of the controller and of node liveness; nil is
	// the real clock. Tests give a fake one to move time.
	Clock clockwork.Clock
}

// DefaultConfig is the configuration of a server that sets nothing: the
// defaults of the server command's flags, and of every Config field an
// embedder leaves zero. DataDir has no default.
func DefaultConfig() Config {
	return Config{
		APIAddr:                     "127.0.0.1:7400",
		AgentAddr:                   ":7401",
		HeartbeatInterval:           5 * time.Second,
		MissedHeartbeats:            3,
		RescheduleAfter:             time.Minute,
		PrePullParallelism:          50,
		MaxTokenTTL:                 DefaultMaxTokenTTL,
		NodeCertTTL:                 30 * 24 * time.Hour,
		AgentSourceRate:             agentsvc.DefaultSourceRate,
		AgentSourceBurst:            agentsvc.DefaultSourceBurst,
		AgentMessageRate:            agentsvc.DefaultMessageRate,
		AgentMessageBurst:           agentsvc.DefaultMessageBurst,
		ImagePolicy:                 spec.ImagePolicyPinFromNodes,
		Resolve:                     registry.Resolve,
		APIConnsPerSource:           DefaultAPIConnsPerSource,
		APISourceRate:               httpguard.DefaultSourceRate,
		APISourceBurst:              httpguard.DefaultSourceBurst,
		SessionTTL:                  restapi.DefaultSessionTTL,
		AgentCertlessConnsPerSource: DefaultAgentCertlessConnsPerSource,
		RevisionHistory:             DefaultRevisionHistory,
		EventRetention:              DefaultEventRetention,
		MaxEvents:                   DefaultMaxEvents,
		DrainAgentsWithin:           DefaultDrainAgentsWithin,
		Logger:                      slog.New(slog.DiscardHandler),
	}
}

// withDefaults is c with each zero field that has a default taken from
// DefaultConfig. A negative value is not zero: it stays, for Validate.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setZero(&c.APIAddr, d.APIAddr)
	setZero(&c.AgentAddr, d.AgentAddr)
	setZero(&c.HeartbeatInterval, d.HeartbeatInterval)
	setZero(&c.MissedHeartbeats, d.MissedHeartbeats)
	setZero(&c.RescheduleAfter, d.RescheduleAfter)
	setZero(&c.PrePullParallelism, d.PrePullParallelism)
	setZero(&c.MaxTokenTTL, d.MaxTokenTTL)
	setZero(&c.NodeCertTTL, d.NodeCertTTL)
	setZero(&c.AgentSourceRate, d.AgentSourceRate)
	setZero(&c.AgentSourceBurst, d.AgentSourceBurst)
	setZero(&c.AgentMessageRate, d.AgentMessageRate)
	setZero(&c.AgentMessageBurst, d.AgentMessageBurst)
	setZero(&c.ImagePolicy, d.ImagePolicy)
	setZero(&c.APIConnsPerSource, d.APIConnsPerSource)
	setZero(&c.APISourceRate, d.APISourceRate)
	setZero(&c.APISourceBurst, d.APISourceBurst)
	setZero(&c.SessionTTL, d.SessionTTL)
	setZero(&c.AgentCertlessConnsPerSource, d.AgentCertlessConnsPerSource)
	setZero(&c.RevisionHistory, d.RevisionHistory)
	setZero(&c.EventRetention, d.EventRetention)
	setZero(&c.MaxEvents, d.MaxEvents)
	setZero(&c.DrainAgentsWithin, d.DrainAgentsWithin)
	if c.Resolve == nil {
		c.Resolve = d.Resolve
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

func setZero[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// Validate says what is wrong with c, naming each bad field, its value
// and the server command's flag that sets it; nil if nothing is. It takes
// c as complete: a zero where a field needs a value is an error here, as
// when a flag is given 0 (New fills zeros from DefaultConfig first).
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, field string, value any, problem, flag string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s %v: %s (%s)", field, value, problem, flag))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory: required (--data-dir)"))
	}
	if err := store.CheckURL(c.Store); err != nil {
		errs = append(errs, fmt.Errorf("%w (--store)", err))
	}
	check(c.APIAddr != "", "API address", `""`, "required", "--api-addr")
	check(c.AgentAddr != "", "agent address", `""`, "required", "--agent-addr")
	check(c.ExpectedAgents >= 0, "expected agents", c.ExpectedAgents, "must be 0 or more", "--expected-agents")
	check(c.MaxAgents >= 0, "max agents", c.MaxAgents, "must be 0 (no cap) or more", "--max-agents")
	for _, d := range []struct {
		field string
		value time.Duration
		flag  string
	}{
		{"heartbeat interval", c.HeartbeatInterval, "--heartbeat-interval"},
		{"reschedule after", c.RescheduleAfter, "--reschedule-after"},
		{"node certificate TTL", c.NodeCertTTL, "--node-cert-ttl"},
		{"max token TTL", c.MaxTokenTTL, "--max-token-ttl"},
		{"event retention", c.EventRetention, "--event-retention"},
		{"drain agents within", c.DrainAgentsWithin, "--drain-agents-within"},
	} {
		check(d.value > 0, d.field, d.value, "must be positive", d.flag)
	}
	for _, n := range []struct {
		field string
		value int
		flag  string
	}{
		{"missed heartbeats", c.MissedHeartbeats, "--missed-heartbeats"},
		{"pre-pull parallelism", c.PrePullParallelism, "--prepull-parallelism"},
		{"agent source burst", c.AgentSourceBurst, "--agent-source-burst"},
		{"agent message burst", c.AgentMessageBurst, "--agent-message-burst"},
		{"API connections per source", c.APIConnsPerSource, "--api-max-conns-per-source"},
		{"API source burst", c.APISourceBurst, "--api-source-burst"},
		{"agent enrolling connections per source", c.AgentCertlessConnsPerSource, "--agent-max-enroll-conns-per-source"},
		{"revision history", c.RevisionHistory, "--revision-history"},
		{"max events", c.MaxEvents, "--max-events"},
	} {
		check(n.value >= 1, n.field, n.value, "must be at least 1", n.flag)
	}
	check(c.AgentSourceRate > 0, "agent source rate", c.AgentSourceRate, "must be positive", "--agent-source-rate")
	check(c.AgentMessageRate > 0, "agent message rate", c.AgentMessageRate, "must be positive", "--agent-message-rate")
	check(c.APISourceRate > 0, "API source rate", c.APISourceRate, "must be positive", "--api-source-rate")
	check(c.SessionTTL > 0, "session TTL", c.SessionTTL, "must be positive", "--session-ttl")
	if c.OIDC.Issuer != "" || c.OIDC.ClientID != "" {
		if err := c.OIDC.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	check(c.ImagePolicy.Valid(), "image policy", fmt.Sprintf("%q", c.ImagePolicy),
		fmt.Sprintf("use %s, %s or %s", spec.ImagePolicyResolveOnServer, spec.ImagePolicyPinFromNodes, spec.ImagePolicyUnpinned), "--image-policy")
	return errors.Join(errs...)
}

// agentWindow is the static HTTP/2 flow-control window of each agent
// stream and connection: twice the largest message, so no message waits for
// a window update.
const agentWindow = 2 * maxAgentMessage

// maxAgentMessage bounds what one agent message may weigh, so a broken or
// hostile agent cannot make the server allocate without limit.
const maxAgentMessage = 1 << 20

// The REST API's timeouts. The TLS handshake must end within the
// shortest of them (net/http), so ReadHeaderTimeout bounds it too. The
// write timeout outlasts the longest events poll (restapi.MaxEventWait).
// The idle timeout closes HTTP/1.1 and HTTP/2 connections without a
// request in flight; HTTP/2 PINGs do not count as requests.
const (
	apiReadHeaderTimeout = 10 * time.Second
	apiReadTimeout       = time.Minute
	apiWriteTimeout      = restapi.MaxEventWait + 30*time.Second
)

// apiIdleTimeout is a variable so that tests can shorten it.
var apiIdleTimeout = 2 * time.Minute

// Server is a control plane. New acquires what it needs (the store, the
// listeners); Run serves until its context ends and releases them all;
// Close releases them for a server that will not run.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	ca       *pki.Authority // the CA roots now
	caKeeper *caKeeper      // keeps them as the store has them
	apiLn    net.Listener
	agentLn  net.Listener
	http     *http.Server
	debug    *http.Server // nil unless Config.DebugAddr is set
	debugLn  net.Listener
	grpc     *grpc.Server
	fleet    *fleet
	gate     *agentsvc.Gate
	agents   *agentsvc.Service
	cert     *pki.ServerCert
	hosts    []string // the server certificate's
	api      *restapi.Handler
	guard    *httpguard.Guard
	// auditFile, if set, copies the audit log (--audit-file).
	auditFile *auditFile
	adminTok  string // path
	keyFile   string // path

	mu   sync.Mutex // guards used
	used bool       // by Run or Close: what New acquired is theirs to release
}

// New opens the store and the key file, loads the identity every replica
// of the store shares (the CA and the bootstrap admin token, created by
// the first replica to start), this replica's server certificate, and
// binds both listeners.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	allow, err := restapi.RegistryHosts(cfg.RegistryAllow)
	if err != nil {
		return nil, err
	}
	cfg.RegistryAllow = allow
	// The apply endpoint takes a whole spec file; health is for load
	// balancers and monitoring, uncounted.
	guard, err := httpguard.New(httpguard.Config{SourceRate: cfg.APISourceRate, SourceBurst: cfg.APISourceBurst, Logger: cfg.Logger,
		Routes: map[string]httpguard.Policy{"POST /v1/apply": {MaxBody: restapi.MaxSpecFile}, "GET /v1/health": {NoSourceLimit: true}}})
	if err != nil {
		return nil, err
	}
	if err := datadir.Secure(cfg.DataDir, cfg.Logger); err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.Store, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, store: st, guard: guard, adminTok: filepath.Join(cfg.DataDir, "admin.token")}
	if cfg.AuditFile != "" {
		if s.auditFile, err = openAuditFile(cfg.AuditFile, cfg.Logger); err != nil {
			st.Close()
			return nil, err
		}
		st.SetAuditSink(s.auditFile.write)
	}
	if err := s.loadIdentity(ctx, st); err != nil {
		st.Close()
		return nil, err
	}
	events := restapi.NewEventBell()
	var cl *cluster
	if pg, ok := st.(*store.Postgres); ok {
		clock := cfg.Clock
		if clock == nil {
			clock = clockwork.NewRealClock()
		}
		if cl, err = newCluster(ctx, pg, cfg, clock, events); err != nil {
			st.Close()
			return nil, err
		}
	}
	s.fleet, err = newFleet(ctx, st, cfg, events, cl)
	if err != nil {
		st.Close()
		return nil, err
	}
	if s.gate, err = agentsvc.LoadGate(ctx, st, s.log); err != nil {
		st.Close()
		return nil, err
	}
	var (
		sso     *oidcauth.Verifier
		ssoInfo *api.SSOInfo
	)
	if cfg.OIDC.Issuer != "" {
		if sso, err = oidcauth.NewVerifier(ctx, cfg.OIDC, cfg.OIDCClient); err != nil {
			st.Close()
			return nil, err
		}
		ssoInfo = &api.SSOInfo{Issuer: cfg.OIDC.Issuer, ClientID: cfg.OIDC.ClientID}
		// Logins by SSO wait for the provider; the server does not.
		go func() {
			if err := sso.Discover(ctx); err != nil {
				s.log.Warn("the identity provider does not answer yet; single sign-on logins fail until it does", "issuer", cfg.OIDC.Issuer, "err", err)
			}
		}()
	}
	s.api = restapi.New(restapi.Deps{Store: st, Logger: s.log, CA: s.caKeeper, Gate: s.gate, Live: s.fleet.live, Out: s.fleet.out, Ctl: s.fleet.ctl,
		Revoked: s.fleet.revoked, Removed: s.fleet.removed, Events: events, MaxTokenTTL: cfg.MaxTokenTTL, ImagePolicy: cfg.ImagePolicy,
		RegistryAllow: cfg.RegistryAllow, Resolve: cfg.Resolve, Clock: cfg.Clock, SessionTTL: cfg.SessionTTL,
		Logins: s.guard, Tokens: s.guard, SSO: sso, SSOInfo: ssoInfo})
	s.checkFDLimit(ctx)
	if err := s.listen(); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// serverHosts are the names a local server is always reachable by.
func serverHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	return hosts
}

func (s *Server) listen() error {
	var err error
	s.apiLn, err = net.Listen("tcp", s.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listening for the API on %s: %w", s.cfg.APIAddr, err)
	}
	s.agentLn, err = net.Listen("tcp", s.cfg.AgentAddr)
	if err != nil {
		s.apiLn.Close()
		return fmt.Errorf("listening for agents on %s: %w", s.cfg.AgentAddr, err)
	}
	limits := agentsvc.NewLimits(agentsvc.LimitsConfig{SourceRate: s.cfg.AgentSourceRate, SourceBurst: s.cfg.AgentSourceBurst,
		MessageRate: s.cfg.AgentMessageRate, MessageBurst: s.cfg.AgentMessageBurst}, s.log)
	s.agentLn = limits.Listener(s.agentLn)
	s.apiLn = newCapListener(s.apiLn, s.cfg.APIConnsPerSource, s.log)
	s.http = &http.Server{
		Handler:           s.guard.Wrap(s.api),
		TLSConfig:         pki.APIServerTLS(s.ca, s.cert),
		ReadHeaderTimeout: apiReadHeaderTimeout,
		ReadTimeout:       apiReadTimeout,
		WriteTimeout:      apiWriteTimeout,
		IdleTimeout:       apiIdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.grpc = grpc.NewServer(
		// Certificate-less connections are counted and timed (enrolling
		// agents); those with a node certificate pass the node gate.
		grpc.Creds(newCertlessCreds(s.gate.Creds(credentials.NewTLS(pki.AgentServerTLS(s.ca, s.cert, s.gate.Check))),
			s.cfg.AgentCertlessConnsPerSource, s.log)),
		grpc.MaxRecvMsgSize(maxAgentMessage),
		// Stop waits for the handlers, which use the store Run closes next.
		grpc.WaitForHandlers(true),
		grpc.InTapHandle(limits.Tap),
		// gRPC waits 120s by default for a new connection's TLS and
		// HTTP/2 handshakes; an agent gives up after 20s, and takes well
		// under a second on any link it can work over: a client that
		// does not complete them in 10s should not hold a connection.
		grpc.ConnectionTimeout(10*time.Second),
		// One server holds thousands of mostly idle agent streams, so
		// every per-connection cost counts. TLS already buffers a whole
		// record, so gRPC's own read buffer (32 KiB by default) only
		// copies it again; the write buffer is borrowed from a pool for
		// each flush instead of kept by every connection.
		grpc.ReadBufferSize(0),
		grpc.SharedWriteBuffer(true),
		// Static windows turn off gRPC's bandwidth estimation, which
		// answers nearly every heartbeat with a PING of its own: a write
		// and a read more per heartbeat, for a stream that never needs a
		// window larger than its biggest message.
		grpc.StaticStreamWindowSize(agentWindow),
		grpc.StaticConnWindowSize(agentWindow),
		// An agent's connection always carries its stream; one without a
		// call for minutes is a leftover, and holds an open file.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, MaxConnectionIdle: 5 * time.Minute}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	deps := agentsvc.Deps{Store: s.store, CA: s.ca, Gate: s.gate,
		Live: s.fleet.live, Out: s.fleet.out, Ctl: s.fleet.ctl, Enrolled: s.fleet.enrolled, Limits: limits, Logger: s.log,
		HeartbeatInterval: s.cfg.HeartbeatInterval, CertTTL: s.cfg.NodeCertTTL, MaxAgents: s.cfg.MaxAgents}
	if cl := s.fleet.cluster; cl != nil {
		cl.bind(s.fleet, s.gate, s.agentLn.Addr().String(), s.apiLn.Addr().String())
		deps.OnSession, deps.OnReenrolled = cl.session, cl.gateChanged
		s.caKeeper.replicas(cl.bus)
	}
	s.agents = agentsvc.New(deps)
	s.caKeeper.agents, s.caKeeper.gate = s.agents, s.gate
	agentproto.RegisterAgentServer(s.grpc, s.agents)
	if s.cfg.DebugAddr != "" {
		if s.debugLn, err = debugsrv.Listen(s.cfg.DebugAddr, s.cfg.DebugAllowRemote); err != nil {
			s.apiLn.Close()
			s.agentLn.Close()
			return err
		}
		s.debug = &http.Server{Handler: debugsrv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	}
	return nil
}

// Run serves until ctx ends, then shuts down cleanly: listeners close,
// agent streams and API requests end, the last heartbeat times are
// flushed, the store closes. It returns only once every goroutine it
// started, and every request handler, has ended. A server runs once.
func (s *Server) Run(ctx context.Context) error {
	if err := s.start(); err != nil {
		return err
	}
	s.log.Info("serving", "api", s.APIURL(), "agents", s.AgentAddr())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Requests' contexts derive from ctx, so that a long poll (an events
	// wait, up to restapi.MaxEventWait) ends when the server stops instead of
	// outlasting the shutdown.
	s.http.BaseContext = func(net.Listener) context.Context { return ctx }
	routes := s.http.Handler
	var requests sync.WaitGroup
	s.http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		defer requests.Done()
		routes.ServeHTTP(w, r)
	})
	errc := make(chan error, 3) // one a server
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.http.ServeTLS(s.apiLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving API: %w", err)
		}
	})
	wg.Go(func() {
		if err := s.grpc.Serve(s.agentLn); err != nil && (ctx.Err() == nil || !errors.Is(err, net.ErrClosed)) {
			errc <- fmt.Errorf("serving agents: %w", err)
		}
	})
	// A replica of several goes on renewing its record and vouching for
	// its nodes while it drains its agents (below): the leader must not
	// count them silent while they are still here.
	fleetCtx, stopFleet := ctx, func() {}
	if s.fleet.cluster != nil {
		fleetCtx, stopFleet = context.WithCancel(context.WithoutCancel(ctx))
	}
	defer stopFleet()
	wg.Go(func() { s.fleet.run(fleetCtx) })
	wg.Go(func() { s.renewServerCertificate(ctx) })
	if s.caKeeper.notices != nil {
		wg.Go(func() { s.caKeeper.watch(ctx) })
	}
	wg.Go(func() { s.pruneHistory(ctx) })
	if s.debug != nil {
		wg.Go(func() {
			if err := s.debug.Serve(s.debugLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving debug profiles: %w", err)
			}
		})
		s.log.Info("serving debug profiles", "addr", "http://"+s.debugLn.Addr().String()+"/debug/pprof/")
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	// New agent connections are refused from now on, which costs an agent
	// nothing to learn: it tries another server at once, or, with none,
	// comes back within seconds of this one's restart. An agent let in
	// would only be told to go, and back off as from an overloaded server.
	// The streams open keep their connections until they drain.
	if err := s.agentLn.Close(); err != nil {
		s.log.Warn("closing the agent listener", "err", err)
	}
	s.shutdownHTTP(s.http, "API")
	if s.debug != nil {
		s.shutdownHTTP(s.debug, "debug profiles")
	}
	// Agent streams never end by themselves: the agents are told to move
	// to another server (GoAway), and given DrainAgentsWithin to leave.
	// Those that stay are cut off; they reconnect with backoff, and their
	// containers keep running. Stop waits for the handlers
	// (grpc.WaitForHandlers).
	drainCtx, drained := context.WithTimeout(context.Background(), s.cfg.DrainAgentsWithin)
	s.agents.Drain(drainCtx, s.cfg.DrainAgentsWithin)
	drained()
	s.grpc.Stop()
	s.agents.Wait()
	s.caKeeper.stop()
	stopFleet()
	wg.Wait()
	requests.Wait()
	s.fleet.live.Flush(context.Background())
	if cerr := errors.Join(s.store.Close(), s.auditFile.Close()); err == nil && cerr != nil {
		err = cerr
	}
	s.log.Info("stopped")
	return err
}

// shutdownHTTP stops srv, waiting a while for its requests to end: they
// end soon, as their contexts have ended. Those still running after that
// lose their connections.
func (s *Server) shutdownHTTP(srv *http.Server, what string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		s.log.Warn("requests still running at shutdown; closing their connections", "server", what, "err", err)
		if err := srv.Close(); err != nil {
			s.log.Warn("closing connections", "server", what, "err", err)
		}
	}
}

// start marks s as used, or says why it cannot run.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used {
		return errors.New("server: already run or closed; a server runs once, make a new one with New")
	}
	s.used = true
	return nil
}

// Close releases what New acquired, the listeners and the store, of a
// server that will not run: Run releases them itself when it returns, so
// Close does nothing once Run started. Close may be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used {
		return nil
	}
	s.used = true
	errs := []error{s.apiLn.Close(), s.agentLn.Close()}
	if s.debugLn != nil {
		errs = append(errs, s.debugLn.Close())
	}
	errs = append(errs, s.store.Close(), s.auditFile.Close())
	return errors.Join(errs...)
}

// serverCertCheckInterval is how often a running server looks at its
// certificate's expiry; it renews it a month before (pki.ServerCertificateDue).
const serverCertCheckInterval = time.Hour

// renewServerCertificate renews the server certificate in place, for new
// handshakes on both listeners, when it is due, until ctx ends: a server
// that runs for longer than its certificate lives needs no restart.
func (s *Server) renewServerCertificate(ctx context.Context) {
	t := time.NewTicker(serverCertCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkServerCertificate()
	}
}

// checkServerCertificate replaces the server certificate if it is due, or
// not of the root that serves (a CA rotation finished), with the one
// LoadOrCreateServerCertificate stores (a new one, unless an operator put
// a fresh one in the data dir). A failure is logged and tried again at the
// next check; the old certificate serves meanwhile.
func (s *Server) checkServerCertificate() { s.caKeeper.checkServerCert() }

// APIURL is the REST API's base URL, e.g. https://127.0.0.1:7400.
func (s *Server) APIURL() string { return "https://" + s.apiLn.Addr().String() }

// AgentAddr is the host:port agents connect to.
func (s *Server) AgentAddr() string { return s.agentLn.Addr().String() }

// CAFile is the path of the CA certificate clients trust.
func (s *Server) CAFile() string { return filepath.Join(s.cfg.DataDir, "ca.crt") }

// KeyFile is the path of the key file that seals the store's secrets.
func (s *Server) KeyFile() string { return s.keyFile }

// AdminTokenFile is the path of the bootstrap admin API token.
func (s *Server) AdminTokenFile() string { return s.adminTok }

// DefaultDrainAgentsWithin is Config.DrainAgentsWithin's default: ten
// seconds spread the reconnections of 10,000 agents to 1,000 a second on
// the servers that take them.
const DefaultDrainAgentsWithin = 10 * time.Second

// The enrollment token defaults of the REST API (package restapi), for the
// CLI's flags.
const (
	DefaultTokenTTL    = restapi.DefaultTokenTTL
	DefaultTokenUses   = restapi.DefaultTokenUses
	DefaultMaxTokenTTL = restapi.DefaultMaxTokenTTL
)

// CreateEnrollToken makes an enrollment token, as POST /v1/tokens does. The
// answer is the only place its secret appears.
func (s *Server) CreateEnrollToken(ctx context.Context, req api.TokenRequest) (api.EnrollToken, error) {
	return s.api.CreateEnrollToken(ctx, req)
}
