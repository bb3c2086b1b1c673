package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/spec"
)

func newServerCommand(e *env) *cobra.Command {
	var (
		cfg        = server.DefaultConfig()
		def        = server.DefaultConfig()
		logs       logFlags
		oidcCACert string
	)
	cmd := &cobra.Command{
		Use:   "server --data-dir DIR [flags]",
		Short: "Run the control plane: the REST API, the agents' endpoint and the controllers",
		Long: `Run the dockfleet server until interrupted.

On first start on a new store it creates the key file (DATA_DIR/store.key
unless --key-file names another), its certificate authority, which CLI users
and agents trust, and a bootstrap admin API token. The CA's key and the token
are kept in the store, sealed with the key file's key; a start writes
DATA_DIR/ca.crt and DATA_DIR/admin.token from them when they are missing.

Several replicas share one store (PostgreSQL): give every replica the same
key file, and they are one server, with one CA and one admin token. Back the
key file up apart from the store: without it the store's secrets cannot be
opened (docs/operations.md#key-file).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The server validates its configuration itself, for every
			// embedder; here a bad value is the caller's mistake: exit 2.
			if err := cfg.Validate(); err != nil {
				return &usageError{err: err}
			}
			if oidcCACert != "" {
				c, err := httpClientTrusting(oidcCACert)
				if err != nil {
					return &usageError{err: fmt.Errorf("--oidc-ca-cert: %w", err)}
				}
				cfg.OIDCClient = c
			}
			cfg.Logger = logs.logger(e.stderr)
			return runServer(cmd.Context(), e, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory of the default store, the key file, ca.crt, the server certificate and admin.token (required)")
	f.StringVar(&cfg.Store, "store", "", "where the state is kept: sqlite:PATH, or a PostgreSQL URL postgres://USER:PASSWORD@HOST:PORT/DATABASE "+
		"(or a keyword/value DSN) that several servers can share (default: SQLite in DATA_DIR/dockfleet.db)")
	f.StringVar(&cfg.KeyFile, "key-file", "", "key file that seals the CA key and admin token in the store, the same for every replica; "+
		"created on first start if absent (default DATA_DIR/"+server.DefaultKeyFile+")")
	f.StringVar(&cfg.APIAddr, "api-addr", def.APIAddr, "HOST:PORT of the HTTPS REST API")
	f.StringVar(&cfg.AgentAddr, "agent-addr", def.AgentAddr, "HOST:PORT agents connect to (mTLS)")
	f.IntVar(&cfg.ExpectedAgents, "expected-agents", def.ExpectedAgents, "agents this server should hold: it warns at start when its open-file limit "+
		"(one file per agent) is too low for them, or for the enrolled nodes if more (default: the enrolled nodes)")
	f.StringSliceVar(&cfg.Hosts, "host", nil, "extra DNS name or IP for the server certificate (repeatable)")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", def.HeartbeatInterval, "how often agents send heartbeats")
	f.IntVar(&cfg.MissedHeartbeats, "missed-heartbeats", def.MissedHeartbeats, "missed heartbeats after which a node is unreachable")
	f.DurationVar(&cfg.RescheduleAfter, "reschedule-after", def.RescheduleAfter, "how long replicated instances wait on an unreachable node before they move")
	f.DurationVar(&cfg.NodeCertTTL, "node-cert-ttl", def.NodeCertTTL, "lifetime of the certificates agents get")
	f.DurationVar(&cfg.MaxTokenTTL, "max-token-ttl", def.MaxTokenTTL, "the longest lifetime an enrollment token may be made for")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "loopback HOST:PORT for Go's pprof profiles over plain HTTP, unauthenticated (off when empty)")
	f.BoolVar(&cfg.DebugAllowRemote, "debug-allow-remote", false, "let --debug-addr be an address other hosts can reach")
	f.IntVar(&cfg.PrePullParallelism, "prepull-parallelism", def.PrePullParallelism, "how many nodes pull a rollout's image at once when its spec asks for prePull")
	f.Float64Var(&cfg.AgentSourceRate, "agent-source-rate", def.AgentSourceRate,
		"new agent connections, and as many calls, one source address may open per second once its burst is spent; "+
			"more are refused and the agents retry with backoff")
	f.IntVar(&cfg.AgentSourceBurst, "agent-source-burst", def.AgentSourceBurst,
		"agent connections, and as many calls, one source address may open at once: at least the number of agents "+
			"behind one address (a NAT), which all reconnect together after a server restart")
	f.Float64Var(&cfg.AgentMessageRate, "agent-message-rate", def.AgentMessageRate,
		"messages per second one agent may send, over all its streams, once its burst is spent; a stream over it is closed")
	f.IntVar(&cfg.AgentMessageBurst, "agent-message-burst", def.AgentMessageBurst,
		"messages one agent may send at once, over all its streams (heartbeats, and statuses in a rollout: a few per container replaced)")
	f.Var((*imagePolicyFlag)(&cfg.ImagePolicy), "image-policy", "image policy of the deployments whose spec sets no imagePolicy: "+
		"resolveOnServer refuses an apply whose image's registry the server cannot reach, pinFromNodes lets the first node "+
		"to pull the image pin its digest, unpinned asks no registry and pins nothing")
	f.StringSliceVar(&cfg.RegistryAllow, "registry-allow", nil, "registry hosts (host or host:port; docker.io for Docker Hub) "+
		"images may come from: an apply naming another is refused, and the server contacts no other (default: any; repeatable)")
	f.IntVar(&cfg.APIConnsPerSource, "api-max-conns-per-source", def.APIConnsPerSource,
		"API connections one source address may hold at once; one more is closed when accepted")
	f.Float64Var(&cfg.APISourceRate, "api-source-rate", def.APISourceRate,
		"API requests per second one source address may make once its burst is spent; more are answered 429 with Retry-After "+
			"(GET /v1/health is not counted)")
	f.IntVar(&cfg.APISourceBurst, "api-source-burst", def.APISourceBurst,
		"API requests one source address may make at once: raise both for many users or scripts behind one address (a NAT)")
	f.DurationVar(&cfg.SessionTTL, "session-ttl", def.SessionTTL, "how long a login (dockfleet login) lasts")
	f.StringVar(&cfg.AuditFile, "audit-file", "", "file to append a copy of the audit log to, one JSON object per line (for a SIEM)")
	f.StringVar(&cfg.OIDC.Issuer, "oidc-issuer", "", "issuer URL of an OpenID Connect identity provider: users log in by single sign-on (dockfleet login --sso)")
	f.StringVar(&cfg.OIDC.ClientID, "oidc-client-id", "", "dockfleet's client ID at the identity provider (a public client with the device-code grant)")
	f.StringVar(&cfg.OIDC.UsernameClaim, "oidc-username-claim", "", "ID token claim of the user name (default preferred_username, else a verified email, else sub)")
	f.StringVar(&cfg.OIDC.GroupsClaim, "oidc-groups-claim", "", "ID token claim of the user's groups, which dockfleet binding create --group binds (default groups)")
	f.StringVar(&oidcCACert, "oidc-ca-cert", "", "PEM file of the CA that signs the identity provider's certificate, when the system does not trust it")
	f.IntVar(&cfg.AgentCertlessConnsPerSource, "agent-max-enroll-conns-per-source", def.AgentCertlessConnsPerSource,
		"agent connections without a client certificate (enrolling agents) one source address may hold at once, each for 30s at most; "+
			"agents over it retry with backoff")
	f.IntVar(&cfg.RevisionHistory, "revision-history", def.RevisionHistory,
		"newest revisions each deployment keeps; older ones are deleted unless still in use")
	f.DurationVar(&cfg.EventRetention, "event-retention", def.EventRetention, "how long events are kept")
	f.IntVar(&cfg.MaxEvents, "max-events", def.MaxEvents, "newest events kept at most")
	f.IntVar(&cfg.MaxAgents, "max-agents", def.MaxAgents, "agents this server holds at most; one more is told to connect to another "+
		"of its --server entries (0: no cap)")
	f.DurationVar(&cfg.DrainAgentsWithin, "drain-agents-within", def.DrainAgentsWithin, "on a graceful stop, how long agents are given to move "+
		"to another server: each is told to go within a random time up to it, and those still here after it are cut off")
	logs.add(f)
	return cmd
}

// imagePolicyFlag is --image-policy: one of the spec's image policies.
type imagePolicyFlag spec.ImagePolicy

func (p *imagePolicyFlag) String() string { return string(*p) }
func (p *imagePolicyFlag) Type() string   { return "policy" }
func (p *imagePolicyFlag) Set(s string) error {
	if !spec.ImagePolicy(s).Valid() {
		return fmt.Errorf("%q is not an image policy; use %s, %s or %s", s, spec.ImagePolicyResolveOnServer, spec.ImagePolicyPinFromNodes, spec.ImagePolicyUnpinned)
	}
	*p = imagePolicyFlag(s)
	return nil
}

func runServer(ctx context.Context, e *env, cfg server.Config) error {
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return fmt.Errorf("starting server: %w", err)
	}
	fmt.Fprintf(e.stdout, "dockfleet server is running\n\n")
	fmt.Fprintf(e.stdout, "  API:          %s\n", srv.APIURL())
	fmt.Fprintf(e.stdout, "  agents:       %s\n", srv.AgentAddr())
	fmt.Fprintf(e.stdout, "  CA:           %s\n", srv.CAFile())
	fmt.Fprintf(e.stdout, "  admin token:  %s\n", srv.AdminTokenFile())
	fmt.Fprintf(e.stdout, "  key file:     %s (back it up; every replica needs it)\n\n", srv.KeyFile())
	fmt.Fprintf(e.stdout, "Create an enrollment token for agents with 'dockfleet token create'.\n")
	return serve(ctx, "server", srv.Run)
}

// daemonGCPercent is the garbage collector's target for the daemons when
// GOGC is not set. Their heap is mostly long-lived: a server's is its
// agents' connections, so Go's default of 100 lets it grow to twice that
// before a collection. 50 keeps a third less memory for little CPU, as a
// daemon allocates little while idle (BENCHMARKS.md).
const daemonGCPercent = 50

// serve runs a daemon until ctx ends; the end of ctx is a clean stop, not an
// error.
func serve(ctx context.Context, what string, run func(context.Context) error) error {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(daemonGCPercent)
	}
	err := run(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("running %s: %w", what, err)
	}
	return nil
}

type durationFlag struct {
	name  string
	value time.Duration
}

// checkPositive is a usage error for the first duration flag that is not
// above zero.
func checkPositive(flags ...durationFlag) error {
	for _, f := range flags {
		if f.value <= 0 {
			return usageErrorf("%s must be above zero", f.name)
		}
	}
	return nil
}
