package cli

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
)

const migrateSpec = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  mode: global
  container:
    image: hello:v1
`

// TestStoreMigrateToPostgres moves a real server's SQLite store into
// PostgreSQL with the CLI, then starts a server on PostgreSQL with the
// same data dir and key file: it is the same server, with the same CA,
// admin token, tokens and deployments.
func TestStoreMigrateToPostgres(t *testing.T) {
	ctx := context.Background()
	old := servertest.Start(t, nil)
	tok, err := old.Client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Client.Apply(ctx, "web.yaml", "", []byte(migrateSpec)); err != nil {
		t.Fatal(err)
	}
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	// The server on PostgreSQL writes ca.crt again from the CA sealed in
	// the store: the same CA, if the move kept it.
	caCert, err := os.ReadFile(old.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(old.CAFile); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.DSN(t)
	from := "sqlite:" + old.DataDir + "/" + storeFile

	r := runCLI(t, nil, "", "store", "migrate", "--from", from, "--to", dsn)
	if r.code != exitOK {
		t.Fatalf("store migrate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"deployments  1", "enroll_tokens  1", "server_secrets  2", "Copied"} {
		if !strings.Contains(strings.Join(strings.Fields(r.stdout), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("store migrate said %q; want %q in it", r.stdout, want)
		}
	}

	moved := servertest.Start(t, func(c *server.Config) {
		c.DataDir, c.Store = old.DataDir, dsn
	})
	if got, err := os.ReadFile(moved.CAFile); err != nil || !bytes.Equal(got, caCert) {
		t.Errorf("ca.crt after the move: %v; want the CA from before", err)
	}
	if moved.AdminToken != old.AdminToken {
		t.Error("the admin token changed with the move")
	}
	deps, err := moved.Client.ListDeployments(ctx, "default")
	if err != nil || len(deps) != 1 || deps[0].Name != "web" {
		t.Fatalf("deployments on PostgreSQL: %+v, %v; want web", deps, err)
	}
	toks, err := moved.Client.ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].ID != tok.ID {
		t.Fatalf("tokens on PostgreSQL: %+v, %v; want %s", toks, err, tok.ID)
	}
	if err := moved.Stop(); err != nil {
		t.Fatal(err)
	}

	// Again, into the database that now holds the store: refused.
	r = runCLI(t, nil, "", "store", "migrate", "--from", from, "--to", dsn)
	if r.code != exitFailure || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("a second migrate: exit %d, %q; want a refusal saying the database is not empty", r.code, r.stderr)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--from", "sqlite:" + t.TempDir() + "/none.db", "--to", dsn}, exitFailure, "no store at"},
		{[]string{"--from", old.DataDir, "--to", dsn}, exitUsage, "want sqlite:PATH"},
		{[]string{"--from", from, "--to", "sqlite:/x.db"}, exitUsage, "PostgreSQL"},
		{[]string{"--from", from, "--to", "mysql://u:secret@h/db"}, exitUsage, "unknown kind of store URL"},
		{[]string{"--from", from, "--to", "postgres://u:secret@127.0.0.1:1/db"}, exitFailure, "connecting to PostgreSQL at 127.0.0.1:1"},
	} {
		r := runCLI(t, nil, "", append([]string{"store", "migrate"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "secret") {
			t.Errorf("store migrate %v: exit %d, %q; want exit %d and %q, no password", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}
