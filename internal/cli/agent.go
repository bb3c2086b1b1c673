package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
)

// envAgentToken is where the agent finds its enrollment token when --token is
// not given, so that it stays out of the process list.
const envAgentToken = "DOCKFLEET_AGENT_TOKEN"

func newAgentCommand(e *env) *cobra.Command {
	var (
		cfg        agent.Config
		labels     labelsValue
		dockerHost string
		logs       logFlags
	)
	cmd := &cobra.Command{
		Use:   "agent --server HOST:PORT --token TOKEN --data-dir DIR [flags]",
		Short: "Run the agent that runs this host's containers",
		Long: `Run the dockfleet agent of this Docker host until interrupted.

On first start it enrolls with the server using the token (from
'dockfleet token create') and keeps its key and certificate in DATA_DIR; later
starts need no token. The token may also come from $` + envAgentToken + `.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Server == "" {
				return usageErrorf("--server is required")
			}
			if cfg.DataDir == "" {
				return usageErrorf("--data-dir is required")
			}
			if err := checkPositive(durationFlag{"--resync", cfg.ResyncInterval}); err != nil {
				return err
			}
			if !cmd.Flags().Changed("token") {
				cfg.Token = e.getenv(envAgentToken)
			}
			cfg.Labels = labels.labels
			cfg.Logger = logs.logger(e.stderr)
			return runAgent(cmd.Context(), cfg, dockerHost)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "the server's agent address, HOST:PORT (its --agent-addr; required)")
	f.StringVar(&cfg.Token, "token", "", "enrollment token, needed on first start (env "+envAgentToken+")")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory of the agent's key, certificate and state (required)")
	f.StringVar(&cfg.Name, "name", "", "node name to enroll as (default the hostname)")
	f.Var(&labels, "labels", "node labels to ask for at enrollment, k=v,k2=v2; the token must allow each (token create --agent-labels)")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "CA certificate to trust the server with, instead of the fingerprint in the token")
	f.StringVar(&dockerHost, "docker-host", "", "Docker daemon address, e.g. unix:///var/run/docker.sock (default $DOCKER_HOST or the local socket)")
	f.DurationVar(&cfg.ResyncInterval, "resync", 10*time.Second, "how often to reconcile without a trigger")
	logs.add(f)
	return cmd
}

func runAgent(ctx context.Context, cfg agent.Config, dockerHost string) error {
	rt, err := dockerrt.New(dockerHost)
	if err != nil {
		return err
	}
	defer rt.Close()
	cfg.Runtime = rt
	a, err := agent.New(cfg)
	if err != nil {
		return err // it says "agent: …"
	}
	return serve(ctx, "agent", a.Run)
}
