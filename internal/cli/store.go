package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/store"
)

func newStoreCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Back up the server's store, move it to PostgreSQL, and decide what a restored one does",
	}
	makeGroup(cmd)
	cmd.AddCommand(newStoreBackupCommand(e), newStoreMigrateCommand(e), newStoreAcceptRestoreCommand(e))
	return cmd
}

// storeFile is the server's SQLite store in its data directory.
const storeFile = "dockfleet.db"

func newStoreBackupCommand(e *env) *cobra.Command {
	var (
		dataDir, storeURL, out string
		force                  bool
	)
	cmd := &cobra.Command{
		Use:   "backup (--data-dir DIR | --store sqlite:PATH) --out FILE [--force]",
		Short: "Copy the SQLite store to a file, while the server runs",
		Long: `Copy the server's SQLite store to FILE: a consistent snapshot, taken while
the server runs and writes to it (SQLite's VACUUM INTO), by this process on
the same host. The file is private (0600) and appears only once it is
complete and synced. An existing FILE is refused unless --force.

The store holds the CA key and the admin token sealed with the server's key
file (DATA_DIR/store.key, or its --key-file): without that file no backup
can be used. Keep it apart from the backups, as safe as a root key.

To restore: stop the server, copy the backup over DIR/dockfleet.db, remove
DIR/dockfleet.db-wal and DIR/dockfleet.db-shm, start the server. Agents that
applied a newer state than the backup's hold their containers until
'dockfleet store accept-restore'. See docs/operations.md.

A PostgreSQL store is backed up with pg_dump -Fc instead.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := backupSource(dataDir, storeURL)
			if err != nil {
				return err
			}
			if out == "" {
				return usageErrorf("--out FILE is required")
			}
			b, err := store.BackupSQLite(cmd.Context(), db, out, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Backed up %s to %s (%d bytes, schema %d, state sequence %d).\n", db, b.Path, b.Bytes, b.SchemaVersion, b.StateSeq)
			dir := filepath.Dir(db)
			fmt.Fprintf(e.stdout, "The CA key and admin token in it are sealed with the server's key file: keep that apart from the backups,\n"+
				"as safely as a root key (%s, unless the server runs with --key-file).\n", filepath.Join(dir, server.DefaultKeyFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "the server's data directory, which holds dockfleet.db")
	f.StringVar(&storeURL, "store", "", "the store, as sqlite:PATH (instead of --data-dir)")
	f.StringVar(&out, "out", "", "the backup file to write (required)")
	f.BoolVar(&force, "force", false, "replace FILE if it exists")
	return cmd
}

// backupSource is the SQLite file that --data-dir or --store name.
func backupSource(dataDir, storeURL string) (string, error) {
	switch {
	case dataDir != "" && storeURL != "":
		return "", usageErrorf("give --data-dir or --store, not both")
	case dataDir != "":
		return filepath.Join(dataDir, storeFile), nil
	case strings.HasPrefix(storeURL, "sqlite:"):
		p := strings.TrimPrefix(storeURL, "sqlite:")
		if p == "" {
			return "", usageErrorf("--store sqlite:PATH: the path is empty")
		}
		return p, nil
	case strings.HasPrefix(storeURL, "postgres://"), strings.HasPrefix(storeURL, "postgresql://"):
		return "", usageErrorf("--store %s: a PostgreSQL store is backed up with pg_dump -Fc (see docs/operations.md, \"Backups and restore\")",
			strings.SplitN(storeURL, "://", 2)[0]+"://...")
	case storeURL != "":
		return "", usageErrorf("--store %q: want sqlite:PATH", storeURL)
	}
	return "", usageErrorf("give the store to back up: --data-dir DIR or --store sqlite:PATH")
}

func newStoreAcceptRestoreCommand(e *env) *cobra.Command {
	var out outputFormat = outputTable
	cmd := &cobra.Command{
		Use:   "accept-restore",
		Short: "Let a store restored from an older backup rule, removing what it does not know",
		Long: `After the server's store was restored from a backup, agents that had applied
a newer state hold: they keep their containers (deployments applied since
the backup, newer revisions) and 'dockfleet nodes' shows them held.

accept-restore is the decision to let the restored state rule: every node
is sent its desired state again, above what its agent applied, and the
agents apply it. They remove the containers the restored store does not
know and return the others to the revisions it has. It also ends the hold
a backup is born with: run it after every restore, once the nodes are back.
It is idempotent: with nothing held it changes nothing.

Instead, to keep what the agents run, re-apply the newer specs (dockfleet
apply) before deciding.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			res, err := c.AcceptRestore(cmd.Context())
			if err != nil {
				return err
			}
			if out != outputTable {
				return render(e.stdout, out, res, nil)
			}
			if !res.Accepted {
				fmt.Fprintf(e.stdout, "Nothing is held: no agent has applied a newer state than the store's (state %d). Nothing changed.\n", res.FromStateSeq)
				return nil
			}
			fmt.Fprintf(e.stdout, "Accepted the restored state: state sequence %d → %d. Every node is sent its desired state again;\n", res.FromStateSeq, res.ToStateSeq)
			fmt.Fprintf(e.stdout, "the agents now remove what the store does not know. Nodes that were held: %d", len(res.Nodes))
			if len(res.Nodes) > 0 {
				fmt.Fprintf(e.stdout, " (%s)", strings.Join(res.Nodes, ", "))
			}
			fmt.Fprintln(e.stdout, ".")
			return nil
		},
	}
	e.addConnFlags(cmd.Flags(), false)
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

func newStoreMigrateCommand(e *env) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate --from sqlite:PATH --to postgres://...",
		Short: "Move a stopped server's SQLite store into an empty PostgreSQL database",
		Long: `Copy everything a server's SQLite store holds (nodes, tokens, deployments,
revisions, rollouts, instances, events, the sealed CA key and admin token)
into a new, empty PostgreSQL database, so that the server can run on it, as
one replica or several.

Stop the server first: what it writes during the copy would not be copied.
The copy is whole or nothing: read in one transaction, written in one, with
each table's rows counted on both sides before it commits. A database that
holds anything is refused. The SQLite file is left as it was.

Then start the server with --store set to the same URL and the same key
file (DATA_DIR/store.key, or --key-file). See docs/operations.md, "Moving to
PostgreSQL".`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, ok := strings.CutPrefix(from, "sqlite:")
			if !ok || path == "" {
				return usageErrorf("--from %q: want sqlite:PATH, the server's SQLite store (DATA_DIR/%s)", from, storeFile)
			}
			if to == "" || strings.HasPrefix(to, "sqlite:") {
				return usageErrorf("--to: want the URL of an empty PostgreSQL database, postgres://USER@HOST:PORT/DATABASE")
			}
			if err := store.CheckURL(to); err != nil {
				return usageErrorf("--to: %v", err)
			}
			// Opening a file that is not there would make an empty store.
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("no store at %s: give the server's DATA_DIR/%s (%w)", path, storeFile, err)
			}
			src, err := store.OpenSQLite(cmd.Context(), path)
			if err != nil {
				return err
			}
			defer src.Close()
			st, err := store.Open(cmd.Context(), to, "")
			if err != nil {
				return err
			}
			defer st.Close()
			dst, ok := st.(*store.Postgres)
			if !ok {
				return usageErrorf("--to: want a PostgreSQL database")
			}
			counts, err := store.Copy(cmd.Context(), src, dst)
			if err != nil {
				return fmt.Errorf("migrating %s to PostgreSQL: %w", path, err)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TABLE\tROWS")
			for _, c := range counts {
				fmt.Fprintf(w, "%s\t%d\n", c.Table, c.Rows)
			}
			w.Flush()
			fmt.Fprintf(e.stdout, "Copied %s into PostgreSQL. Start the server with --store and that URL, and the same key file.\n", path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the SQLite store to copy, sqlite:PATH (required)")
	f.StringVar(&to, "to", "", "the empty PostgreSQL database to copy into, postgres://USER@HOST:PORT/DATABASE (required)")
	return cmd
}
