package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
)

// --audit-file gets a copy of each audit record, as the store holds it,
// one JSON line each, readable by the server's user alone.
func TestAuditFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	srv := servertest.Start(t, func(cfg *server.Config) { cfg.AuditFile = path })
	if _, err := srv.Client.CreateUser(ctx, "alice", "a passphrase long enough"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.CreateUser(ctx, "x", "short"); err == nil {
		t.Fatal("a short password was accepted")
	}
	want, err := srv.Client.ListAudit(ctx, client.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit file: %v %v; want mode 0600", fi, err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	var got []api.AuditRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r api.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != len(want) || len(got) < 2 {
		t.Fatalf("%d lines in the audit file, %d records in the store", len(got), len(want))
	}
	for i := range got {
		if got[i].Hash != want[i].Hash || got[i].Seq != want[i].Seq {
			t.Errorf("line %d: %+v; the store holds %+v", i, got[i], want[i])
		}
	}
	if got[0].Action != "POST /v1/users" || got[0].Result != "ok" || got[1].Result != "400 bad request" {
		t.Errorf("records %+v", got)
	}
}
