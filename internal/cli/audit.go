package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
)

func newAuditCommand(e *env) *cobra.Command {
	var (
		since time.Duration
		user  string
		out   outputFormat
	)
	cmd := &cobra.Command{
		Use:   "audit [--since 24h] [--user NAME] [-o json]",
		Short: "Show the audit log: who changed what, from where, and how it ended",
		Long: `Show the audit log, oldest first: every request that could change something,
every login, and every refused credential, with who made it, what it
touched, its project, its source address, its result and its request ID.

Records are chained by hash; dockfleet audit verify checks that none was
changed or removed.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since < 0 {
				return usageErrorf("--since must not be negative")
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			f := client.AuditFilter{User: user}
			if since > 0 {
				f.Since = e.now().Add(-since)
			}
			var all []api.AuditRecord
			for {
				page, err := c.ListAudit(cmd.Context(), f)
				if err != nil {
					return err
				}
				all = append(all, page...)
				if len(page) == 0 {
					break
				}
				f.After = page[len(page)-1].Seq
			}
			return render(e.stdout, out, all, func() error {
				t := newTable(e.stdout, "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "PROJECT", "SOURCE", "RESULT")
				for _, r := range all {
					t.row(fmt.Sprint(r.Seq), r.Time.Local().Format(time.DateTime), r.Actor, r.Action, dash(r.Target), dash(r.Project), r.Source, r.Result)
				}
				return t.flush()
			})
		},
	}
	e.addConnFlags(cmd.PersistentFlags(), false)
	cmd.Flags().DurationVar(&since, "since", 0, "only the records of this long ago and since (24h)")
	cmd.Flags().StringVar(&user, "user", "", "only the records of this user, its sessions and its API tokens")
	addOutputFlag(cmd.Flags(), &out)

	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check that no audit record was changed or removed",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			v, err := c.VerifyAudit(cmd.Context())
			if err != nil {
				return err
			}
			if v.OK {
				fmt.Fprintf(e.stdout, "The audit log is whole: %d records, each chained to the one before.\n", v.Records)
				return nil
			}
			for _, p := range v.Problems {
				fmt.Fprintln(e.stdout, p)
			}
			return errors.New("the audit log was tampered with: see the records above")
		},
	}
	cmd.AddCommand(verify)
	return cmd
}
