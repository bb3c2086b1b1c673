package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/client"
)

func newLoginCommand(e *env) *cobra.Command {
	var (
		user          string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login [--user NAME] [--password-stdin]",
		Short: "Log in to a server and keep the session for the commands that follow",
		Long: `Log in to a server with a user name and password. The session token is
kept in the user's config dir (~/.config/dockfleet/credentials.json, readable
by the user alone) and used by later commands to the same --addr, until it
expires or dockfleet logout ends it. --token and DOCKFLEET_TOKEN still win
over it.

The password is asked on the terminal, or read from stdin with
--password-stdin, for scripts.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := e.connConfig(cmd)
			if err != nil {
				return err
			}
			cfg.Token = ""
			c, err := client.New(cfg)
			if err != nil {
				return err
			}
			if user == "" {
				if passwordStdin {
					return usageErrorf("give --user with --password-stdin")
				}
				if user, err = e.readLine("User: "); err != nil {
					return err
				}
			}
			pw, err := e.readPassword("Password: ", passwordStdin)
			if err != nil {
				return err
			}
			l, err := c.Login(cmd.Context(), user, pw)
			if err != nil {
				return err
			}
			s, path, err := e.loadSessions()
			if err != nil {
				return err
			}
			s.Servers[c.Addr()] = session{User: l.User, Token: l.Token, ExpiresAt: l.ExpiresAt}
			if err := saveSessions(path, s); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Logged in to %s as %s; the session %s.\n", c.Addr(), l.User, expiry(l.ExpiresAt, e.now()))
			return nil
		},
	}
	e.addConnFlags(cmd.Flags(), false)
	cmd.Flags().StringVarP(&user, "user", "u", "", "user name (asked when not given)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

func newLogoutCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End the session saved for a server",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := e.connConfig(cmd)
			if err != nil {
				return err
			}
			addr, err := client.CanonicalAddr(cfg.Addr)
			if err != nil {
				return err
			}
			s, path, err := e.loadSessions()
			if err != nil {
				return err
			}
			saved, ok := s.Servers[addr]
			if !ok {
				fmt.Fprintf(e.stdout, "Not logged in to %s.\n", addr)
				return nil
			}
			cfg.Token = saved.Token
			c, err := client.New(cfg)
			if err != nil {
				return err
			}
			// The server ends the session; a session it no longer knows
			// (expired, or ended by a password change) is gone all the same.
			if err := c.Logout(cmd.Context()); err != nil && !client.IsUnauthorized(err) {
				return err
			}
			delete(s.Servers, addr)
			if err := saveSessions(path, s); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Logged out of %s.\n", addr)
			return nil
		},
	}
	e.addConnFlags(cmd.Flags(), false)
	return cmd
}

func newWhoamiCommand(e *env) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the credential in use is, and its roles",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			w, err := c.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			return render(e.stdout, out, w, func() error {
				who := w.Name
				if w.Kind == "token" {
					who = fmt.Sprintf("API token %s", w.TokenID)
					if w.User != "" {
						who += " of user " + w.User
					}
				} else {
					who = "user " + w.User
				}
				fmt.Fprintln(e.stdout, who)
				t := newTable(e.stdout, "ROLE", "PROJECT", "PERMISSIONS")
				for _, g := range w.Grants {
					t.row(g.Role, g.Project, strings.Join(g.Permissions, ","))
				}
				return t.flush()
			})
		},
	}
	e.addConnFlags(cmd.Flags(), false)
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}
