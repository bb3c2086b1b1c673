package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// Password guessing is slowed: after five failures for one user name the
// server answers 429 with Retry-After, the same for a name that does not
// exist, and each attempt is audited.
func TestLoginRateLimited(t *testing.T) {
	ctx := context.Background()
	srv := servertest.Start(t, nil)
	if _, err := srv.Client.CreateUser(ctx, "alice", "a passphrase long enough"); err != nil {
		t.Fatal(err)
	}
	anon, err := client.New(client.Config{Addr: srv.Server.APIURL(), CACertFile: srv.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "ghost"} {
		var last error
		for range 6 {
			_, last = anon.Login(ctx, user, "wrong password guess")
		}
		var ae *client.APIError
		if !errors.As(last, &ae) || ae.StatusCode != http.StatusTooManyRequests || !strings.Contains(ae.Error(), "too many failed logins") {
			t.Errorf("the 6th wrong password for %s: %v; want 429 too many failed logins", user, last)
		}
	}
	// The right password waits too: the name is locked for a while.
	if _, err := anon.Login(ctx, "alice", "a passphrase long enough"); err == nil {
		t.Error("a login went through while the name was locked")
	}
	recs, err := srv.Client.ListAudit(ctx, client.AuditFilter{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, r := range recs {
		if r.Action == "POST /v1/login" && (strings.HasPrefix(r.Result, "401") || strings.HasPrefix(r.Result, "429")) {
			refused++
		}
	}
	if refused != 7 {
		t.Errorf("%d refused logins of alice audited; want 7", refused)
	}
}
