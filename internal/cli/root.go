// Package cli is the dockfleet command: the cobra command tree, one file per
// command, over the REST API client (internal/client) for the user's commands
// and over internal/server and internal/agent for the daemons. It alone picks
// exit codes: 0 for success, 1 for a failure, 2 for a usage mistake.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/version"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Run runs the dockfleet command line args (without the program name) and
// returns the process's exit code. Commands stop when ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, &env{
		stdin:  os.Stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		now:    time.Now,
		termWidth: func() int {
			return terminalWidth(stdout)
		},
		poll: defaultPoll,
	})
}

// defaultPoll is how often a command that follows something asks again.
const defaultPoll = 500 * time.Millisecond

// env is what commands read and write besides their flags; tests replace it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	// termWidth is the width of the terminal stdout is, 0 when it is not
	// one; nil means it is not.
	termWidth func() int
	// poll is how often a command that follows a rollout or events asks
	// again; zero means defaultPoll.
	poll time.Duration

	// conn holds the flags of the commands that call the API.
	conn connFlags
	// ran is set once a command's flags and arguments were accepted, so that
	// an error cobra returns before then counts as a usage error.
	ran bool
}

func (e *env) pollInterval() time.Duration {
	if e.poll <= 0 {
		return defaultPoll
	}
	return e.poll
}

func run(ctx context.Context, args []string, e *env) int {
	root := newRootCommand(e)
	if args == nil {
		args = []string{} // cobra reads os.Args for nil
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	var ue *usageError
	if errors.As(err, &ue) || !e.ran {
		fmt.Fprintf(e.stderr, "error: %v\n", err)
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	printError(e.stderr, err)
	return exitFailure
}

// printError writes err as "error: …" and, for mistakes a user can fix, a
// hint.
func printError(w io.Writer, err error) {
	// Errors may quote what a node reported; their lines stay lines.
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	fmt.Fprintf(w, "error: %s\n", strings.Join(lines, "\n"))
	if client.IsUnauthorized(err) {
		fmt.Fprintln(w, "hint: log in with dockfleet login, or give an API token with --token, --token-file,")
		fmt.Fprintln(w, "      DOCKFLEET_TOKEN or DOCKFLEET_TOKEN_FILE; the server's bootstrap admin token is")
		fmt.Fprintln(w, "      admin.token in its data dir")
	}
}

func newRootCommand(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "dockfleet",
		Short: "dockfleet deploys containers onto fleets of Docker hosts",
		Long: `dockfleet deploys containers onto fleets of Docker hosts.

Start a server and an agent on this host with 'dockfleet dev', then apply a
deployment with 'dockfleet apply -f FILE' and watch it with 'dockfleet get
instances'.`,
		Version:       version.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			e.ran = true
			return nil
		},
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetIn(e.stdin)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{err: err}
	})
	root.SetVersionTemplate("dockfleet {{.Version}}\n")
	makeGroup(root)
	root.AddCommand(
		newVersionCommand(e),
		newServerCommand(e),
		newAgentCommand(e),
		newDevCommand(e),
		newTokenCommand(e),
		newNodesCommand(e),
		newNodeCommand(e),
		newApplyCommand(e),
		newGetCommand(e),
		newDescribeCommand(e),
		newDeleteCommand(e),
		newRolloutCommand(e),
		newEventsCommand(e),
		newSimCommand(e),
		newStoreCommand(e),
		newLoginCommand(e),
		newLogoutCommand(e),
		newWhoamiCommand(e),
		newUserCommand(e),
		newAPITokenCommand(e),
		newRoleCommand(e),
		newBindingCommand(e),
		newProjectCommand(e),
		newAuditCommand(e),
		newCACommand(e),
	)
	return root
}

// usageError is a mistake in how a command was called: an unknown command or
// flag, a bad flag value, a wrong number of arguments. It exits 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// usageArgs makes an argument check's error a usage error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err: err}
		}
		return nil
	}
}

// makeGroup makes cmd a command that only holds subcommands: alone it prints
// its help, and an unknown subcommand is a usage error (cobra would print the
// help and succeed).
func makeGroup(cmd *cobra.Command) {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return &usageError{err: errors.New(msg)}
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		return c.Help()
	}
}

// connFlags are the flags of every command that calls the API. A flag given
// on the command line wins over its environment variable, which wins over the
// default.
type connFlags struct {
	addr, token, tokenFile, caCert, project, clientCert, clientKey string
}

// Environment variables the API commands read.
const (
	envAddr      = "DOCKFLEET_ADDR"
	envToken     = "DOCKFLEET_TOKEN"
	envTokenFile = "DOCKFLEET_TOKEN_FILE"
	envCACert    = "DOCKFLEET_CACERT"
	envProject   = "DOCKFLEET_PROJECT"
	envCert      = "DOCKFLEET_CLIENT_CERT"
	envKey       = "DOCKFLEET_CLIENT_KEY"
)

// addConnFlags adds the API flags to fs: a command's Flags, or a group's
// PersistentFlags. withProject adds --project, for commands on a project's
// objects.
func (e *env) addConnFlags(fs *pflag.FlagSet, withProject bool) {
	c := &e.conn
	fs.StringVar(&c.addr, "addr", client.DefaultAddr, "server API address (env "+envAddr+")")
	fs.StringVar(&c.token, "token", "", "API token (env "+envToken+")")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the API token, read when no token is given (env "+envTokenFile+")")
	fs.StringVar(&c.caCert, "ca-cert", "", "CA certificate to trust the server with, the server's DATA_DIR/ca.crt (env "+envCACert+")")
	fs.StringVar(&c.clientCert, "client-cert", "", "a user's client certificate, to authenticate with instead of a token (dockfleet user cert; env "+envCert+")")
	fs.StringVar(&c.clientKey, "client-key", "", "the client certificate's key (env "+envKey+")")
	c.project = api.DefaultProject
	if withProject {
		fs.StringVarP(&c.project, "project", "p", api.DefaultProject, "project (env "+envProject+")")
	}
}

// connConfig resolves the API flags of cmd with the environment.
func (e *env) connConfig(cmd *cobra.Command) (cfg client.Config, project string, err error) {
	fs := cmd.Flags()
	c := &e.conn
	pick := func(flag, envName, value string) string {
		if fs.Lookup(flag) == nil {
			return value
		}
		if fs.Changed(flag) {
			return value
		}
		if v := e.getenv(envName); v != "" {
			return v
		}
		return value
	}
	cfg.Addr = pick("addr", envAddr, c.addr)
	cfg.CACertFile = pick("ca-cert", envCACert, c.caCert)
	cfg.ClientCertFile = pick("client-cert", envCert, c.clientCert)
	cfg.ClientKeyFile = pick("client-key", envKey, c.clientKey)
	project = pick("project", envProject, c.project)
	if project == "" {
		return client.Config{}, "", usageErrorf("--project must not be empty")
	}
	// A token beats a token file, and a flag beats any variable.
	switch {
	case fs.Changed("token"):
		cfg.Token = c.token
	case fs.Changed("token-file"):
		cfg.Token, err = readToken(c.tokenFile)
	case e.getenv(envToken) != "":
		cfg.Token = e.getenv(envToken)
	case e.getenv(envTokenFile) != "":
		cfg.Token, err = readToken(e.getenv(envTokenFile))
	}
	if err != nil {
		return client.Config{}, "", err
	}
	if cfg.Token == "" && cfg.ClientCertFile == "" {
		// The login saved for this server, if any (dockfleet login).
		if addr, err := client.CanonicalAddr(cfg.Addr); err == nil {
			cfg.Token = e.savedToken(addr)
		}
	}
	return cfg, project, nil
}

func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return t, nil
}

// client returns an API client configured by cmd's flags and the
// environment, and the project to act in.
func (e *env) client(cmd *cobra.Command) (*client.Client, string, error) {
	cfg, project, err := e.connConfig(cmd)
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, "", err
	}
	return c, project, nil
}
