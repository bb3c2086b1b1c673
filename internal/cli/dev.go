package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
	"github.com/dockfleet/dockfleet/internal/server"
)

// devOptions are the flags of dockfleet dev.
type devOptions struct {
	dataDir    string
	keyFile    string
	apiAddr    string
	agentAddr  string
	name       string
	labels     labelsValue
	dockerHost string
	resync     time.Duration
	logs       logFlags
}

func newDevCommand(e *env) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev [flags]",
		Short: "Run a server and an agent for this host in one process, to try dockfleet out",
		Long: `Run a dockfleet server and an agent for this host's Docker in one process,
until interrupted. The agent enrolls with the labels of --labels (role=web,
which examples/hello/deployment.yaml selects); a restart with the same data
dir keeps the node, the deployments and the containers.

The data dir defaults to $XDG_STATE_HOME/dockfleet/dev, else
~/.dockfleet/dev.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dataDir == "" {
				dir, err := defaultDevDir(e.getenv)
				if err != nil {
					return err
				}
				o.dataDir = dir
			}
			if !cmd.Flags().Changed("labels") {
				if err := o.labels.Set("role=web"); err != nil {
					return err
				}
			}
			return runDev(cmd.Context(), e, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "directory of the server's and the agent's state (default $XDG_STATE_HOME/dockfleet/dev or ~/.dockfleet/dev)")
	f.StringVar(&o.keyFile, "key-file", "", "key file that seals the server's CA key and admin token in its store (default DATA_DIR/"+server.DefaultKeyFile+", created if absent)")
	def := server.DefaultConfig()
	f.StringVar(&o.apiAddr, "api-addr", def.APIAddr, "HOST:PORT of the HTTPS REST API")
	// Its agent is on this host: the agents' endpoint need not be reachable from others.
	f.StringVar(&o.agentAddr, "agent-addr", localAddr(def.AgentAddr), "HOST:PORT of the agents' endpoint")
	f.StringVar(&o.name, "name", "", "node name of the agent (default the hostname)")
	f.Var(&o.labels, "labels", "the agent's node labels, k=v,k2=v2 (default role=web)")
	f.StringVar(&o.dockerHost, "docker-host", "", "Docker daemon address (default $DOCKER_HOST or the local socket)")
	f.DurationVar(&o.resync, "resync", agent.DefaultConfig().ResyncInterval, "how often the agent reconciles without a trigger")
	o.logs.add(f)
	return cmd
}

// defaultDevDir is $XDG_STATE_HOME/dockfleet/dev, else ~/.dockfleet/dev.
func defaultDevDir(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "dockfleet", "dev"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("finding a data dir: %w; pass --data-dir", err)
		}
	}
	return filepath.Join(home, ".dockfleet", "dev"), nil
}

func runDev(ctx context.Context, e *env, o *devOptions) error {
	log := o.logs.logger(e.stderr)
	if o.name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name and no hostname: %w", err)
		}
		o.name = h
	}
	// Docker first: without it there is nothing to try, and nothing to undo.
	rt, err := dockerrt.New(o.dockerHost)
	if err != nil {
		return err
	}
	defer rt.Close()
	acfg := agent.DefaultConfig()
	acfg.DataDir, acfg.Name, acfg.Labels = filepath.Join(o.dataDir, "agent"), o.name, o.labels.labels
	acfg.Runtime, acfg.Logger, acfg.ResyncInterval = rt, log.With("component", "agent"), o.resync
	// The server's address is known once it listens; until then its flag
	// stands in, so that a bad agent flag fails before the server starts.
	acfg.Server = localAddr(o.agentAddr)
	if err := acfg.Validate(); err != nil {
		return agentError(err)
	}

	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.KeyFile, cfg.APIAddr, cfg.AgentAddr = o.dataDir, o.keyFile, o.apiAddr, o.agentAddr
	cfg.Logger = log.With("component", "server")
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return fmt.Errorf("starting server: %w", err)
	}
	// A restarted dev agent has its identity already and ignores the token;
	// it is cheap, single-use and short-lived.
	tok, err := srv.CreateEnrollToken(ctx, api.TokenRequest{Uses: 1, TTL: "10m", Labels: o.labels.labels})
	if err != nil {
		closeServer(srv, log)
		return fmt.Errorf("creating the agent's enrollment token: %w", err)
	}
	acfg.Server, acfg.Token, acfg.CACertFile = localAddr(srv.AgentAddr()), tok.Token, srv.CAFile()
	a, err := agent.New(acfg)
	if err != nil {
		closeServer(srv, log)
		return agentError(err)
	}

	printDevBanner(e.stdout, srv, o)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(gctx, "server", srv.Run) })
	g.Go(func() error { return serve(gctx, "agent", a.Run) })
	return g.Wait()
}

// closeServer closes a server that was made but will not run. The error
// that stops it from running is the one to report; a failure to close
// after it is only logged.
func closeServer(srv *server.Server, log *slog.Logger) {
	if err := srv.Close(); err != nil {
		log.Warn("closing the server", "err", err)
	}
}

// localAddr turns a listener's address into one this host can dial: a
// wildcard host (":7401", "[::]:7401") becomes 127.0.0.1.
func localAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func printDevBanner(w io.Writer, srv *server.Server, o *devOptions) {
	fmt.Fprintf(w, "dockfleet dev is running: a server, and an agent for node %q with labels %s.\n\n", o.name, formatLabels(o.labels.labels))
	fmt.Fprintf(w, "  API:          %s\n", srv.APIURL())
	fmt.Fprintf(w, "  agents:       %s\n", srv.AgentAddr())
	fmt.Fprintf(w, "  CA:           %s\n", srv.CAFile())
	fmt.Fprintf(w, "  admin token:  %s\n", srv.AdminTokenFile())
	fmt.Fprintf(w, "  data:         %s\n\n", o.dataDir)
	fmt.Fprintf(w, "Point the CLI at it, in another shell:\n\n")
	fmt.Fprintf(w, "  export %s=%s %s=%s %s=%s\n\n",
		envAddr, shellQuote(srv.APIURL()),
		envCACert, shellQuote(srv.CAFile()),
		envTokenFile, shellQuote(srv.AdminTokenFile()))
	fmt.Fprintf(w, "then: dockfleet apply -f examples/hello/deployment.yaml && dockfleet get instances\n")
	fmt.Fprintf(w, "Stop with Ctrl-C.\n")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:+@%=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
