package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
)

// Where the agent and the simulator find their enrollment token besides the
// command line, where every local user can read it (ps, /proc/PID/cmdline).
const (
	envAgentToken     = "DOCKFLEET_AGENT_TOKEN"
	envAgentTokenFile = "DOCKFLEET_AGENT_TOKEN_FILE"
)

// enrollTokenFlags are the agent's and the simulator's ways to be given an
// enrollment token. As for the API token, a token beats a token file and a
// flag beats a variable.
type enrollTokenFlags struct{ token, file string }

func (t *enrollTokenFlags) add(f *pflag.FlagSet, what string) {
	f.StringVar(&t.file, "token-file", "", "file holding the enrollment token, "+what+" (env "+envAgentTokenFile+")")
	f.StringVar(&t.token, "token", "", "the enrollment token itself, visible to every local user in ps: prefer --token-file or $"+envAgentToken)
}

// resolve returns the token cmd was given, if any, and warns on e's stderr
// when it came on the command line.
func (t *enrollTokenFlags) resolve(cmd *cobra.Command, e *env) (string, error) {
	fs := cmd.Flags()
	switch {
	case fs.Changed("token"):
		fmt.Fprintf(e.stderr, "warning: --token puts the enrollment token where every user of this host can read it (ps); use --token-file or $%s\n", envAgentToken)
		return t.token, nil
	case fs.Changed("token-file"):
		return readToken(t.file)
	case e.getenv(envAgentToken) != "":
		return e.getenv(envAgentToken), nil
	case e.getenv(envAgentTokenFile) != "":
		return readToken(e.getenv(envAgentTokenFile))
	}
	return "", nil
}

func newAgentCommand(e *env) *cobra.Command {
	var (
		cfg        = agent.DefaultConfig()
		token      enrollTokenFlags
		labels     labelsValue
		dockerHost string
		logs       logFlags
	)
	cmd := &cobra.Command{
		Use:   "agent --server HOST:PORT[,HOST:PORT...] --token-file FILE --data-dir DIR [flags]",
		Short: "Run the agent that runs this host's containers",
		Long: `Run the dockfleet agent of this Docker host until interrupted.

On first start it enrolls with the server using the token (from
'dockfleet token create', read from --token-file or $` + envAgentToken + `)
and keeps its key and certificate in DATA_DIR; later starts need no token,
and the token file can be deleted.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Token, err = token.resolve(cmd, e); err != nil {
				return err
			}
			cfg.Labels = labels.labels
			cfg.Logger = logs.logger(e.stderr)
			return runAgent(cmd.Context(), cfg, dockerHost)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Servers, "server", nil, "the server's agent address, HOST:PORT (its --agent-addr; required); "+
		"the replicas of a server as several (repeatable or comma-separated) or as a DNS name with several addresses: "+
		"the agent starts at a random one and moves to the next when its server goes away")
	token.add(f, "needed on first start")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory of the agent's key, certificate and state (required)")
	f.StringVar(&cfg.Name, "name", "", "node name to enroll as (default the hostname)")
	f.Var(&labels, "labels", "node labels to ask for at enrollment, k=v,k2=v2; the token must allow each (token create --agent-labels)")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "CA certificate to trust the server with, instead of the fingerprint in the token")
	f.StringVar(&dockerHost, "docker-host", "", "Docker daemon address, e.g. unix:///var/run/docker.sock (default $DOCKER_HOST or the local socket)")
	f.DurationVar(&cfg.ResyncInterval, "resync", cfg.ResyncInterval, "how often to reconcile without a trigger")
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
		return agentError(err)
	}
	return serve(ctx, "agent", a.Run)
}

// agentError makes agent.New's refusal of its configuration a usage error:
// it names the flag to fix. Other errors say "agent: …" already.
func agentError(err error) error {
	if errors.Is(err, agent.ErrInvalidConfig) {
		return &usageError{err: err}
	}
	return err
}
