package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/oidcauth"
)

func newLoginCommand(e *env) *cobra.Command {
	var (
		user          string
		passwordStdin bool
		sso           bool
		ssoCACert     string
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
--password-stdin, for scripts. With --sso, a server set up with an identity
provider (--oidc-issuer) logs you in there: open the page shown, in any
browser, and enter the code.`,
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
			var l api.Login
			if sso {
				if user != "" || passwordStdin {
					return usageErrorf("--sso logs in at the identity provider: give neither --user nor --password-stdin")
				}
				l, err = e.loginSSO(cmd, c, ssoCACert)
			} else {
				l, err = e.loginPassword(cmd, c, user, passwordStdin)
			}
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
	cmd.Flags().BoolVar(&sso, "sso", false, "log in at the server's identity provider (single sign-on), with a code to enter in a browser")
	cmd.Flags().StringVar(&ssoCACert, "sso-ca-cert", "", "PEM file of the CA of the identity provider's certificate, when the system does not trust it")
	return cmd
}

func (e *env) loginPassword(cmd *cobra.Command, c *client.Client, user string, passwordStdin bool) (api.Login, error) {
	if user == "" {
		if passwordStdin {
			return api.Login{}, usageErrorf("give --user with --password-stdin")
		}
		var err error
		if user, err = e.readLine("User: "); err != nil {
			return api.Login{}, err
		}
	}
	pw, err := e.readPassword("Password: ", passwordStdin)
	if err != nil {
		return api.Login{}, err
	}
	return c.Login(cmd.Context(), user, pw)
}

// loginSSO logs in by the device-code flow: the user opens the provider's
// page in any browser and enters the code shown, and the provider's ID
// token is traded for a session.
func (e *env) loginSSO(cmd *cobra.Command, c *client.Client, caFile string) (api.Login, error) {
	info, err := c.AuthInfo(cmd.Context())
	if err != nil {
		return api.Login{}, err
	}
	if info.SSO == nil {
		return api.Login{}, errors.New("this server has no single sign-on: log in with a user name and password")
	}
	var hc *http.Client
	if caFile != "" {
		if hc, err = httpClientTrusting(caFile); err != nil {
			return api.Login{}, usageErrorf("--sso-ca-cert: %v", err)
		}
	}
	raw, err := oidcauth.DeviceLogin(cmd.Context(), info.SSO.Issuer, info.SSO.ClientID, hc, func(uri, complete, code string) {
		fmt.Fprintf(e.stderr, "To log in, open %s and enter the code %s", uri, code)
		if complete != "" {
			fmt.Fprintf(e.stderr, " (or open %s)", complete)
		}
		fmt.Fprintln(e.stderr, "; waiting...")
	})
	if err != nil {
		return api.Login{}, err
	}
	return c.LoginSSO(cmd.Context(), raw)
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
