package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/authz"
	"github.com/dockfleet/dockfleet/internal/datadir"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// Who may do what: users, API tokens, roles, bindings and projects.

// simpleCommand is a command of args that calls run with an API client and
// prints done, if not empty, after it succeeded.
func (e *env) simpleCommand(use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, args []string) (done string, err error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  usageArgs(args),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := run(cmd, args)
			if err == nil && done != "" {
				fmt.Fprintln(e.stdout, done)
			}
			return err
		},
	}
}

// group makes a command group whose subcommands call the API.
func (e *env) group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short}
	makeGroup(cmd)
	e.addConnFlags(cmd.PersistentFlags(), false)
	cmd.AddCommand(subs...)
	return cmd
}

func newUserCommand(e *env) *cobra.Command {
	var passwordStdin bool
	create := e.simpleCommand("create NAME [--password-stdin]", "Create a local user (give it a role with dockfleet binding create)", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			pw, err := e.readPassword("Password for "+args[0]+": ", passwordStdin)
			if err != nil {
				return "", err
			}
			if _, err := c.CreateUser(cmd.Context(), args[0], pw); err != nil {
				return "", err
			}
			return fmt.Sprintf("User %s created; give it a role with: dockfleet binding create --user %s --role viewer --project default", args[0], args[0]), nil
		})
	create.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")

	var out outputFormat
	list := e.simpleCommand("list", "List the users", cobra.NoArgs, func(cmd *cobra.Command, _ []string) (string, error) {
		c, _, err := e.client(cmd)
		if err != nil {
			return "", err
		}
		us, err := c.ListUsers(cmd.Context())
		if err != nil {
			return "", err
		}
		return "", render(e.stdout, out, us, func() error {
			t := newTable(e.stdout, "NAME", "KIND", "STATUS", "CREATED")
			for _, u := range us {
				kind, status := "local", "active"
				if u.SSO {
					kind = "sso"
				}
				if u.Disabled {
					status = "disabled"
				}
				t.row(u.Name, kind, status, ago(u.CreatedAt, e.now()))
			}
			return t.flush()
		})
	})
	list.Aliases = []string{"ls"}
	addOutputFlag(list.Flags(), &out)

	var passwdStdin bool
	passwd := e.simpleCommand("passwd [NAME] [--password-stdin]", "Change your password, or (admin) set another user's", cobra.MaximumNArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			if len(args) == 1 {
				pw, err := e.readPassword("New password for "+args[0]+": ", passwdStdin)
				if err != nil {
					return "", err
				}
				if _, err := c.PatchUser(cmd.Context(), args[0], api.UserPatch{Password: &pw}); err != nil {
					return "", err
				}
				return fmt.Sprintf("Password of %s set; its sessions ended.", args[0]), nil
			}
			if passwdStdin {
				return "", usageErrorf("changing your own password asks the current one on the terminal; --password-stdin sets another user's (give NAME)")
			}
			cur, err := e.readPassword("Current password: ", false)
			if err != nil {
				return "", err
			}
			neu, err := e.readPassword("New password: ", false)
			if err != nil {
				return "", err
			}
			if err := c.ChangePassword(cmd.Context(), cur, neu); err != nil {
				return "", err
			}
			return "Password changed; your sessions ended: log in again with dockfleet login.", nil
		})
	passwd.Flags().BoolVar(&passwdStdin, "password-stdin", false, "read the new password from stdin")

	setDisabled := func(use, short string, disabled bool, done string) *cobra.Command {
		return e.simpleCommand(use, short, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			if _, err := c.PatchUser(cmd.Context(), args[0], api.UserPatch{Disabled: &disabled}); err != nil {
				return "", err
			}
			return fmt.Sprintf(done, args[0]), nil
		})
	}
	var (
		certDir string
		certTTL time.Duration
	)
	cert := e.simpleCommand("cert --out-dir DIR [--ttl 720h]", "Get a client certificate for yourself, to use instead of a token (mutual TLS)", cobra.NoArgs,
		func(cmd *cobra.Command, _ []string) (string, error) {
			if certDir == "" {
				return "", usageErrorf("--out-dir is required")
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			keyPEM, csr, err := pki.NewUserKey()
			if err != nil {
				return "", err
			}
			uc, err := c.IssueUserCertificate(cmd.Context(), csr, certTTL.String())
			if err != nil {
				return "", err
			}
			if err := os.MkdirAll(certDir, 0o700); err != nil {
				return "", err
			}
			certFile, keyFile := filepath.Join(certDir, "user.crt"), filepath.Join(certDir, "user.key")
			if err := datadir.WriteFile(keyFile, keyPEM, datadir.FileMode); err != nil {
				return "", err
			}
			if err := datadir.WriteFile(certFile, []byte(uc.Certificate), datadir.FileMode); err != nil {
				return "", err
			}
			return fmt.Sprintf("Wrote %s and %s (%s). Use them with --client-cert and --client-key, or %s and %s.",
				certFile, keyFile, expiry(uc.ExpiresAt, e.now()), envCert, envKey), nil
		})
	cert.Flags().StringVar(&certDir, "out-dir", "", "directory to write user.crt and user.key to (the key is readable by you alone)")
	cert.Flags().DurationVar(&certTTL, "ttl", 30*24*time.Hour, "how long the certificate is valid (at most 90 days)")

	del := e.simpleCommand("delete NAME", "Delete a user with its API tokens and bindings", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("User %s deleted.", args[0]), c.DeleteUser(cmd.Context(), args[0])
		})
	del.Aliases = []string{"rm"}
	return e.group("user", "Create, list, change and delete users", create, list, passwd, cert,
		setDisabled("disable NAME", "Disable a user: its sessions and API tokens are refused", true, "User %s disabled; its sessions ended."),
		setDisabled("enable NAME", "Enable a disabled user", false, "User %s enabled."), del)
}

func newAPITokenCommand(e *env) *cobra.Command {
	var (
		role, project string
		ttl           time.Duration
		createOut     outputFormat
	)
	create := &cobra.Command{
		Use:   "create NAME --role ROLE --project PROJECT [--ttl 720h]",
		Short: "Create an API token for automation and print it",
		Long: `Create an API token and print it on stdout; it is shown only now. The token
acts with one role in one project (* for every project), and you can grant
only what you hold there yourself. It expires after --ttl (at most a year).`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return usageErrorf("--ttl must be above zero")
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			t, err := c.CreateAPIToken(cmd.Context(), api.APITokenRequest{Name: args[0], Role: role, Project: project, TTL: ttl.String()})
			if err != nil {
				return err
			}
			if createOut != outputTable {
				return render(e.stdout, createOut, t, nil)
			}
			fmt.Fprintln(e.stdout, t.Token)
			fmt.Fprintf(e.stderr, "API token %s (%s in project %s), %s. Keep it secret; pass it with DOCKFLEET_TOKEN or --token-file.\n",
				t.ID, t.Role, t.Project, expiry(t.ExpiresAt, e.now()))
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "role the token acts with (dockfleet role list)")
	create.Flags().StringVar(&project, "project", "", "project the token acts in; * for every project")
	create.Flags().DurationVar(&ttl, "ttl", 30*24*time.Hour, "how long the token is valid")
	addOutputFlag(create.Flags(), &createOut)
	create.MarkFlagRequired("role")
	create.MarkFlagRequired("project")

	var (
		all bool
		out outputFormat
	)
	list := e.simpleCommand("list [--all]", "List your API tokens and sessions (--all: every user's)", cobra.NoArgs,
		func(cmd *cobra.Command, _ []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			ts, err := c.ListAPITokens(cmd.Context(), all)
			if err != nil {
				return "", err
			}
			return "", render(e.stdout, out, ts, func() error {
				t := newTable(e.stdout, "ID", "NAME", "KIND", "OWNER", "ROLE", "PROJECT", "EXPIRES")
				for _, tok := range ts {
					exp := "never"
					if !tok.ExpiresAt.IsZero() {
						exp = strings.TrimPrefix(expiry(tok.ExpiresAt, e.now()), "expires ")
					}
					t.row(tok.ID, tok.Name, tok.Kind, dash(tok.Owner), dash(tok.Role), dash(tok.Project), exp)
				}
				return t.flush()
			})
		})
	list.Aliases = []string{"ls"}
	list.Flags().BoolVar(&all, "all", false, "every user's tokens (needs apitokens:read in every project)")
	addOutputFlag(list.Flags(), &out)

	revoke := e.simpleCommand("revoke ID", "Revoke an API token or a session", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("API token %s revoked.", args[0]), c.RevokeAPIToken(cmd.Context(), args[0])
		})
	return e.group("apitoken", "Create, list and revoke API tokens", create, list, revoke)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newRoleCommand(e *env) *cobra.Command {
	var out outputFormat
	list := e.simpleCommand("list", "List the roles and their permissions", cobra.NoArgs, func(cmd *cobra.Command, _ []string) (string, error) {
		c, _, err := e.client(cmd)
		if err != nil {
			return "", err
		}
		rs, err := c.ListRoles(cmd.Context())
		if err != nil {
			return "", err
		}
		return "", render(e.stdout, out, rs, func() error {
			t := newTable(e.stdout, "NAME", "KIND", "PERMISSIONS")
			for _, r := range rs {
				kind := "custom"
				if r.Builtin {
					kind = "built-in"
				}
				t.row(r.Name, kind, strings.Join(r.Permissions, ","))
			}
			return t.flush()
		})
	})
	list.Aliases = []string{"ls"}
	addOutputFlag(list.Flags(), &out)

	put := func(use, short string, update bool) *cobra.Command {
		var perms []string
		cmd := e.simpleCommand(use, short, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			if _, err := c.PutRole(cmd.Context(), api.Role{Name: args[0], Permissions: perms}, update); err != nil {
				return "", err
			}
			if update {
				return fmt.Sprintf("Role %s updated.", args[0]), nil
			}
			return fmt.Sprintf("Role %s created.", args[0]), nil
		})
		cmd.Long = short + ".\n\nPermissions are resource:verb, resource:* or *; the resource:verb ones are:\n  " +
			strings.Join(authz.Catalog, "\n  ")
		cmd.Flags().StringSliceVar(&perms, "permission", nil, "permissions the role grants, p1,p2 (repeatable)")
		cmd.MarkFlagRequired("permission")
		return cmd
	}
	del := e.simpleCommand("delete NAME", "Delete a custom role that nothing holds", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("Role %s deleted.", args[0]), c.DeleteRole(cmd.Context(), args[0])
		})
	del.Aliases = []string{"rm"}
	return e.group("role", "List, create, change and delete roles", list,
		put("create NAME --permission P,...", "Create a custom role", false),
		put("update NAME --permission P,...", "Replace a custom role's permissions", true), del)
}

func newBindingCommand(e *env) *cobra.Command {
	var out outputFormat
	list := e.simpleCommand("list", "List who holds which role where", cobra.NoArgs, func(cmd *cobra.Command, _ []string) (string, error) {
		c, _, err := e.client(cmd)
		if err != nil {
			return "", err
		}
		bs, err := c.ListBindings(cmd.Context())
		if err != nil {
			return "", err
		}
		return "", render(e.stdout, out, bs, func() error {
			t := newTable(e.stdout, "ID", "SUBJECT", "ROLE", "PROJECT")
			for _, b := range bs {
				t.row(b.ID, b.Subject, b.Role, b.Project)
			}
			return t.flush()
		})
	})
	list.Aliases = []string{"ls"}
	addOutputFlag(list.Flags(), &out)

	var user, group, role, project string
	create := e.simpleCommand("create (--user NAME | --group NAME) --role ROLE --project PROJECT",
		"Give a user, or an SSO group, a role in a project (* for every project)", cobra.NoArgs,
		func(cmd *cobra.Command, _ []string) (string, error) {
			if (user == "") == (group == "") {
				return "", usageErrorf("give one of --user and --group")
			}
			subject := "user:" + user
			if group != "" {
				subject = "group:" + group
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			b, err := c.CreateBinding(cmd.Context(), api.Binding{Subject: subject, Role: role, Project: project})
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("Binding %s: %s holds %s in project %s.", b.ID, b.Subject, b.Role, b.Project), nil
		})
	create.Flags().StringVar(&user, "user", "", "user to bind")
	create.Flags().StringVar(&group, "group", "", "identity provider group to bind")
	create.Flags().StringVar(&role, "role", "", "role (dockfleet role list)")
	create.Flags().StringVar(&project, "project", "", "project, or * for every project")
	create.MarkFlagRequired("role")
	create.MarkFlagRequired("project")

	del := e.simpleCommand("delete ID", "Delete a binding", cobra.ExactArgs(1), func(cmd *cobra.Command, args []string) (string, error) {
		c, _, err := e.client(cmd)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Binding %s deleted.", args[0]), c.DeleteBinding(cmd.Context(), args[0])
	})
	del.Aliases = []string{"rm"}
	return e.group("binding", "Give users and groups roles in projects", list, create, del)
}

func newProjectCommand(e *env) *cobra.Command {
	var out outputFormat
	list := e.simpleCommand("list", "List the projects you can see", cobra.NoArgs, func(cmd *cobra.Command, _ []string) (string, error) {
		c, _, err := e.client(cmd)
		if err != nil {
			return "", err
		}
		ps, err := c.ListProjects(cmd.Context())
		if err != nil {
			return "", err
		}
		return "", render(e.stdout, out, ps, func() error {
			t := newTable(e.stdout, "NAME", "NODE SELECTOR", "CREATED")
			for _, p := range ps {
				t.row(p.Name, dash(formatSelector(p.NodeSelector)), ago(p.CreatedAt, e.now()))
			}
			return t.flush()
		})
	})
	list.Aliases = []string{"ls"}
	addOutputFlag(list.Flags(), &out)

	var selector labelsValue
	create := e.simpleCommand("create NAME [--node-selector k=v,...]", "Create a project, optionally confined to the nodes a selector picks", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			if _, err := c.CreateProject(cmd.Context(), api.Project{Name: args[0], NodeSelector: spec.Selector{MatchLabels: selector.labels}}); err != nil {
				return "", err
			}
			return fmt.Sprintf("Project %s created; give users roles in it with dockfleet binding create --project %s.", args[0], args[0]), nil
		})
	create.Flags().Var(&selector, "node-selector", "labels the project's nodes have, k=v,k2=v2: its deployments may select no other node")

	del := e.simpleCommand("delete NAME", "Delete a project that holds no deployment, with its bindings and events", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) (string, error) {
			c, _, err := e.client(cmd)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("Project %s deleted.", args[0]), c.DeleteProject(cmd.Context(), args[0])
		})
	del.Aliases = []string{"rm"}
	return e.group("project", "Create, list and delete projects (tenants)", list, create, del)
}
