package cli

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/server"
)

func newTokenCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the tokens agents enroll with",
	}
	makeGroup(cmd)
	e.addConnFlags(cmd.PersistentFlags(), false) // tokens belong to no project
	cmd.AddCommand(newTokenCreateCommand(e), newTokenListCommand(e), newTokenRevokeCommand(e))
	return cmd
}

func newTokenCreateCommand(e *env) *cobra.Command {
	var (
		ttl         time.Duration
		uses        int
		labels      labelsValue
		agentLabels []string
		node        string
		out         outputFormat
	)
	cmd := &cobra.Command{
		Use:   "create [--ttl 1h] [--uses N] [--labels k=v,...] [--agent-labels KEY,...] [--node NAME]",
		Short: "Create an enrollment token and print it",
		Long: `Create an enrollment token and print it on stdout. It is shown only now.

The nodes that enroll with it get its labels. An agent's own --labels are
accepted only for the keys named by --agent-labels ("*" for any key), or
with the value the token sets; any other is refused, so that a host cannot
pick the labels that would bring it other workloads and their secrets.

A token is good for one enrollment within an hour unless --uses and --ttl say
otherwise; the server refuses a --ttl longer than its --max-token-ttl.

With --node NAME the token re-enrolls that existing node, for a host whose
certificate expired while it was offline or was lost: the agent started with
it and --name NAME gets a new certificate for the same node (same ID, labels
and instances), and the node's older certificates are refused from then on.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 {
				return usageErrorf("--ttl must be above zero")
			}
			if uses < 1 {
				return usageErrorf("--uses must be at least 1")
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			req := api.TokenRequest{Uses: uses, Labels: labels.labels, AgentLabels: agentLabels, Node: node, TTL: ttl.String()}
			tok, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if out != outputTable {
				return render(e.stdout, out, tok, nil)
			}
			fmt.Fprintln(e.stdout, tok.Token)
			// The hint keeps the secret out of the agent's command line,
			// which every local user can read in /proc.
			fmt.Fprintf(e.stderr, "Token %s: %s, %s. On each host, save it in a file only root can read, and enroll with:\n\n",
				tok.ID, expiry(tok.ExpiresAt, e.now()), usesText(tok.MaxUses))
			name := ""
			if tok.Node != "" {
				name = " --name " + tok.Node
			}
			fmt.Fprintf(e.stderr, "  dockfleet agent --server %s --token-file /etc/dockfleet/agent.token%s --data-dir /var/lib/dockfleet/agent\n\n",
				agentServerHint(c.Addr()), name)
			fmt.Fprintf(e.stderr, "--server is the server's --agent-addr (port 7401 unless changed); $%s works too.\n", envAgentToken)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&ttl, "ttl", server.DefaultTokenTTL, "how long the token is valid (at most the server's --max-token-ttl)")
	f.IntVar(&uses, "uses", server.DefaultTokenUses, "how many agents may enroll with it")
	f.Var(&labels, "labels", "labels for the nodes that enroll with it, k=v,k2=v2")
	f.StringSliceVar(&agentLabels, "agent-labels", nil, `label keys whose values agents may choose with their --labels, k,k2 ("*": any)`)
	f.StringVar(&node, "node", "", "re-enroll this existing node (name or ID) instead of enrolling new ones")
	addOutputFlag(f, &out)
	return cmd
}

// agentServerHint guesses the agent endpoint from the API address: the same
// host on the default agent port.
func agentServerHint(apiAddr string) string {
	u, err := url.Parse(apiAddr)
	if err != nil || u.Hostname() == "" {
		return "HOST:7401"
	}
	return net.JoinHostPort(u.Hostname(), "7401")
}

func expiry(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "never expires"
	case t.After(now):
		return "expires in " + age(t.Sub(now))
	}
	return "expired " + ago(t, now)
}

func usesText(maxUses int) string {
	switch maxUses {
	case 0:
		return "any number of uses"
	case 1:
		return "one use"
	}
	return strconv.Itoa(maxUses) + " uses"
}

func newTokenListCommand(e *env) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List enrollment tokens",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			return render(e.stdout, out, toks, func() error {
				now := e.now()
				t := newTable(e.stdout, "ID", "LABELS", "USES", "EXPIRES", "STATUS")
				for _, tok := range toks {
					t.row(tok.ID, formatLabels(tok.Labels), tokenUses(tok), tokenExpires(tok, now), tokenStatus(tok, now))
				}
				return t.flush()
			})
		},
	}
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

// tokenUses writes uses of max, "1/3", with ∞ for unlimited.
func tokenUses(t api.EnrollToken) string {
	if t.MaxUses == 0 {
		return fmt.Sprintf("%d/∞", t.Uses)
	}
	return fmt.Sprintf("%d/%d", t.Uses, t.MaxUses)
}

func tokenExpires(t api.EnrollToken, now time.Time) string {
	switch {
	case t.ExpiresAt.IsZero():
		return "never"
	case t.ExpiresAt.After(now):
		return "in " + age(t.ExpiresAt.Sub(now))
	}
	return ago(t.ExpiresAt, now)
}

// tokenStatus is why a token no longer enrolls, or "active".
func tokenStatus(t api.EnrollToken, now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case !t.ExpiresAt.IsZero() && !t.ExpiresAt.After(now):
		return "expired"
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return "used up"
	}
	return "active"
}

func newTokenRevokeCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an enrollment token; enrolled nodes keep their identity",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "token %s revoked\n", args[0])
			return nil
		},
	}
}
