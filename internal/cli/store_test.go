package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/servertest"
)

// TestStoreBackupAndAcceptRestore backs up a running server's store with
// the CLI, refuses what it cannot do with a clear error and nothing
// written, and asks the server to accept a restore it does not need.
func TestStoreBackupAndAcceptRestore(t *testing.T) {
	srv := servertest.Start(t, nil)
	out := t.TempDir()
	backup := filepath.Join(out, "b.db")

	r := runCLI(t, nil, "", "store", "backup", "--data-dir", srv.DataDir, "--out", backup)
	if r.code != 0 {
		t.Fatalf("store backup: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"Backed up " + filepath.Join(srv.DataDir, "dockfleet.db") + " to " + backup, "state sequence",
		"key file", filepath.Join(srv.DataDir, "store.key")} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("store backup said %q; want %q in it", r.stdout, want)
		}
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, %v; want mode 0600", fi, err)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"existing file", []string{"--data-dir", srv.DataDir, "--out", backup}, exitFailure, "b.db exists: choose another --out, or pass --force"},
		{"missing directory", []string{"--data-dir", srv.DataDir, "--out", filepath.Join(out, "no", "b.db")}, exitFailure, "does not exist"},
		{"no store", []string{"--data-dir", t.TempDir(), "--out", filepath.Join(out, "c.db")}, exitFailure, "no store at"},
		{"no --out", []string{"--data-dir", srv.DataDir}, exitUsage, "--out FILE is required"},
		{"no store given", []string{"--out", filepath.Join(out, "c.db")}, exitUsage, "--data-dir DIR or --store sqlite:PATH"},
		{"both", []string{"--data-dir", srv.DataDir, "--store", "sqlite:x.db", "--out", filepath.Join(out, "c.db")}, exitUsage, "not both"},
		{"postgres", []string{"--store", "postgres://u:secret@db/x", "--out", filepath.Join(out, "c.db")}, exitUsage, "pg_dump -Fc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, "", append([]string{"store", "backup"}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tc.code, tc.want)
			}
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("the error shows the store's password: %q", r.stderr)
			}
		})
	}
	if entries, _ := os.ReadDir(out); len(entries) != 1 {
		t.Errorf("the backup directory holds %d entries; want b.db only", len(entries))
	}
	if r := runCLI(t, nil, "", "store", "backup", "--store", "sqlite:"+filepath.Join(srv.DataDir, "dockfleet.db"), "--out", backup, "--force"); r.code != 0 {
		t.Errorf("store backup --store sqlite:PATH --force: exit %d: %s", r.code, r.stderr)
	}

	vars := map[string]string{envAddr: srv.Server.APIURL(), envToken: srv.AdminToken, envCACert: srv.CAFile}
	r = runCLI(t, vars, "", "store", "accept-restore")
	if r.code != 0 || !strings.Contains(r.stdout, "Nothing is held") {
		t.Errorf("store accept-restore with nothing held: exit %d, %q %q; want it to say nothing changed", r.code, r.stdout, r.stderr)
	}
}
