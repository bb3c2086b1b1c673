package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/debugsrv"
	"github.com/dockfleet/dockfleet/internal/sim"
)

// simOptions are the flags of dockfleet sim that sim.Config does not hold.
type simOptions struct {
	labels    labelsValue
	events    bool
	verbose   bool
	debugAddr string
	logs      logFlags
	servers   []string
}

func newSimCommand(e *env) *cobra.Command {
	var (
		cfg   sim.Config
		o     simOptions
		token enrollTokenFlags
	)
	cmd := &cobra.Command{
		Use:   "sim --server HOST:PORT --token-file FILE --agents N [flags]",
		Short: "Run simulated agents against a server, for scale tests",
		Long: `Run N simulated agents in this process until interrupted: hollow nodes, as
Kubernetes' kubemark has. Each is the real agent, with its own enrollment, key
and certificate, mTLS stream and the real protocol; only Docker is replaced by
an in-memory runtime. Its containers "run" at once, and pass exec health
checks after --healthy-after, or never on the --unhealthy-fraction of agents
chosen (every tenth for 0.1). HTTP and TCP checks always fail: nothing listens
in a simulated container; give simulated deployments exec checks or none.

The agents are named PREFIX-1 to PREFIX-N and keep their identities in
DATA_DIR/PREFIX-i: started again with the same --data-dir, they reconnect
instead of enrolling, and need no token. Without --data-dir they live in a
temporary directory, removed on exit.

Progress goes to stderr every second. With --events, stdout gets one JSON
object per line for every agent that starts, connects, disconnects, takes a
desired state ("desired", with its generation and instance count) or fails.

Each agent holds one open file (its connection): a process holds as many
agents as its open-file limit allows, less a margin; run more agents as
several processes, each with its own --name-prefix, and spread them over
loopback source addresses with --source-ip 127.0.0.2,127.0.0.3,...`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Token, err = token.resolve(cmd, e); err != nil {
				return err
			}
			cfg.Server = strings.Join(o.servers, ",")
			if err := checkSimFlags(cmd, &cfg); err != nil {
				return err
			}
			cfg.Labels = o.labels.labels
			return runSim(cmd.Context(), e, cfg, &o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.servers, "server", nil, "the server's agent address, HOST:PORT (its --agent-addr; required); "+
		"several for the replicas of a server (repeatable or comma-separated): each agent starts at a random one")
	token.add(f, "with a use for every new agent")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "CA certificate to trust the server with, instead of the fingerprint in the token")
	f.IntVar(&cfg.Agents, "agents", 0, "how many agents to run (required)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory of the agents' identities and state (default a temporary directory, removed on exit)")
	f.StringVar(&cfg.NamePrefix, "name-prefix", "", "agents are named PREFIX-1 to PREFIX-N (default HOSTNAME-sim)")
	f.Var(&o.labels, "labels", "every agent's node labels, k=v,k2=v2; the token must allow each (token create --agent-labels)")
	f.DurationVar(&cfg.HealthyAfter, "healthy-after", 0, "how long a container runs before its exec health checks pass")
	f.Float64Var(&cfg.UnhealthyFraction, "unhealthy-fraction", 0, "share of agents, 0 to 1, whose containers never pass a health check")
	f.StringSliceVar(&cfg.SourceIPs, "source-ip", nil, "local address to dial the server from, in turn (repeatable or comma-separated)")
	f.IntVar(&cfg.Ramp, "ramp", sim.DefaultRamp, "how many agents may be enrolling or connecting for the first time at once")
	f.DurationVar(&cfg.ResyncInterval, "resync", sim.DefaultResyncInterval, "how often each agent reconciles without a trigger")
	f.BoolVar(&o.events, "events", false, "write one JSON line per agent event on stdout")
	f.BoolVar(&o.verbose, "verbose", false, "log every agent's messages on stderr too")
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's pprof profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6061; off by default")
	o.logs.add(f)
	return cmd
}

// checkSimFlags turns what sim.Run would refuse into usage errors.
func checkSimFlags(cmd *cobra.Command, cfg *sim.Config) error {
	switch {
	case cfg.Server == "":
		return usageErrorf("--server is required")
	case !cmd.Flags().Changed("agents"):
		return usageErrorf("--agents is required")
	case cfg.Agents < 1:
		return usageErrorf("--agents must be at least 1")
	case cfg.DataDir == "" && cfg.Token == "":
		return usageErrorf("--token-file (or $%s) is required: agents in a new data dir must enroll", envAgentToken)
	case cfg.HealthyAfter < 0:
		return usageErrorf("--healthy-after must not be negative")
	case cfg.UnhealthyFraction < 0 || cfg.UnhealthyFraction > 1:
		return usageErrorf("--unhealthy-fraction must be between 0 and 1, e.g. 0.1 for every tenth agent")
	case cfg.Ramp < 1:
		return usageErrorf("--ramp must be at least 1")
	}
	if err := checkPositive(durationFlag{"--resync", cfg.ResyncInterval}); err != nil {
		return err
	}
	for _, s := range cfg.SourceIPs {
		if net.ParseIP(s) == nil {
			return usageErrorf("--source-ip %q is not an IP address, e.g. 127.0.0.2", s)
		}
	}
	return nil
}

func runSim(ctx context.Context, e *env, cfg sim.Config, o *simOptions) error {
	log := o.logs.logger(e.stderr)
	cfg.Logger = log
	if o.verbose {
		cfg.AgentLogger = log
	}
	if o.events {
		cfg.Events = e.stdout
	}
	cfg.Progress = e.stderr
	if limit, ok := sim.OpenFileLimit(); ok {
		if msg := fileLimitWarning(cfg.Agents, cfg.Ramp, limit); msg != "" {
			fmt.Fprintln(e.stderr, msg)
		}
	}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "dockfleet-sim-")
		if err != nil {
			return fmt.Errorf("creating a data dir: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	if o.debugAddr != "" {
		ln, err := debugsrv.Listen(o.debugAddr, false)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		srv := &http.Server{Handler: debugsrv.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	printSimBanner(e.stderr, cfg)
	err := sim.Run(ctx, cfg)
	if errors.Is(err, sim.ErrConfig) {
		return &usageError{err: err}
	}
	return err
}

// fileLimitWarning warns when agents, with what the ramp may hold open on
// top, need more open files than limit allows, and says how to split them.
func fileLimitWarning(agents, ramp int, limit uint64) string {
	// Each agent holds one connection; one enrolling may briefly hold a
	// second, and the process needs a few files of its own.
	margin := uint64(ramp) + 100
	if limit <= margin {
		return fmt.Sprintf("warning: this process may open only %d files; %d agents will not fit", limit, agents)
	}
	perProcess := limit - margin
	if uint64(agents) <= perProcess {
		return ""
	}
	processes := (uint64(agents) + perProcess - 1) / perProcess
	each := (uint64(agents) + processes - 1) / processes
	return fmt.Sprintf("warning: %d agents need about %d open files, and this process may open %d (RLIMIT_NOFILE);\n"+
		"         run %d sim processes of at most %d agents each, with their own --name-prefix and --source-ip",
		agents, agents, limit, processes, each)
}

func printSimBanner(w io.Writer, cfg sim.Config) {
	healthy := "at once"
	if cfg.HealthyAfter > 0 {
		healthy = "after " + cfg.HealthyAfter.String()
	}
	fmt.Fprintf(w, "dockfleet sim: %d agents of %s, %d at a time; containers healthy %s", cfg.Agents, cfg.Server, cfg.Ramp, healthy)
	if cfg.UnhealthyFraction > 0 {
		fmt.Fprintf(w, ", never on %g of the agents", cfg.UnhealthyFraction)
	}
	fmt.Fprintf(w, "\n  data: %s\n", cfg.DataDir)
	if len(cfg.SourceIPs) > 0 {
		fmt.Fprintf(w, "  from: %v\n", cfg.SourceIPs)
	}
}
