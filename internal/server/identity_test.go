package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/seal"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// These tests run several servers on one store, as replicas do (issue
// 13). The store is one SQLite file that every replica's data dir links
// to; PostgreSQL replaces it once it lands. Each replica has a data dir of
// its own, as on separate hosts.

const db = "dockfleet.db"

// replicaDir makes a new data dir whose store is first's.
func replicaDir(t *testing.T, first string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(first, db), filepath.Join(dir, db)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyKeyFile gives dir a copy of the key file at from, as an operator
// gives each replica's host one, and returns its path.
func copyKeyFile(t *testing.T, from, dir string) string {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(dir, server.DefaultKeyFile)
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return to
}

// replicaConfig is servertest's configuration for a server New is called
// on directly, to see it refuse.
func replicaConfig(dir, keyFile string) server.Config {
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.KeyFile = dir, keyFile
	cfg.APIAddr, cfg.AgentAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Resolve = testenv.NoRegistry
	return cfg
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func caFingerprint(t *testing.T, dir string) string {
	t.Helper()
	block, _ := pem.Decode(readFile(t, filepath.Join(dir, pki.CACertFile)))
	if block == nil {
		t.Fatalf("%s/ca.crt holds no PEM", dir)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

// Replicas on one store with one key file are one server: the same CA (so
// agents and users trust any of them) and the same admin token, while each
// has a server certificate of its own.
func TestReplicasShareOneIdentity(t *testing.T) {
	a := servertest.Start(t, nil)
	keyFile := a.Server.KeyFile()
	if got := filepath.Join(a.DataDir, server.DefaultKeyFile); keyFile != got {
		t.Errorf("key file %s; want the default %s", keyFile, got)
	}
	if info, err := os.Stat(keyFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want it created with mode 0600", info, err)
	}
	dirB := replicaDir(t, a.DataDir)
	b := servertest.Start(t, func(cfg *server.Config) {
		cfg.DataDir, cfg.KeyFile = dirB, copyKeyFile(t, keyFile, t.TempDir())
	})
	if fa, fb := caFingerprint(t, a.DataDir), caFingerprint(t, dirB); fa != fb {
		t.Errorf("CA fingerprints %s and %s; want one CA", fa, fb)
	}
	if a.AdminToken != b.AdminToken {
		t.Errorf("admin tokens differ; want the one bootstrap admin token in both data dirs")
	}
	if info, err := os.Stat(filepath.Join(dirB, "admin.token")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("replica b's admin.token: %v, %v; want mode 0600", info, err)
	}
	if bytes.Equal(readFile(t, filepath.Join(a.DataDir, "server.crt")), readFile(t, filepath.Join(dirB, "server.crt"))) {
		t.Error("both replicas have one server certificate; want one each")
	}
	// Each replica's API answers the one token, over TLS verified with
	// the other replica's ca.crt.
	ctx := context.Background()
	tok, err := a.Client.CreateToken(ctx, api.TokenRequest{Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.ListNodes(ctx); err != nil {
		t.Errorf("replica b with the shared token: %v", err)
	}
	// An enrollment token names the CA by fingerprint: one from replica a
	// is good for replica b.
	if fp, _, _, err := pki.ParseEnrollToken(tok.Token); err != nil || fp != caFingerprint(t, dirB) {
		t.Errorf("replica a's enrollment token names CA %s, %v; want replica b's %s", fp, err, caFingerprint(t, dirB))
	}

	// A replica restarted keeps it all.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	b2 := servertest.Start(t, func(cfg *server.Config) {
		cfg.DataDir, cfg.KeyFile = dirB, filepath.Join(a.DataDir, server.DefaultKeyFile)
	})
	if b2.AdminToken != a.AdminToken || caFingerprint(t, dirB) != caFingerprint(t, a.DataDir) {
		t.Error("replica b restarted has another admin token or CA")
	}
}

// Replicas starting at the same moment on a new store each make a CA and
// an admin token; one of each is stored and every replica takes that one.
func TestReplicasStartingTogetherAgree(t *testing.T) {
	first := t.TempDir()
	// The store exists (migrated) and the key file is given: what an
	// operator sets up before starting the replicas.
	st, err := store.OpenSQLite(context.Background(), filepath.Join(first, db))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	if _, err := seal.CreateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	dirs := []string{first, replicaDir(t, first), replicaDir(t, first), replicaDir(t, first)}
	servers := make([]*server.Server, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Go(func() { servers[i], errs[i] = server.New(context.Background(), replicaConfig(dir, keyFile)) })
	}
	wg.Wait()
	for i, s := range servers {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		t.Cleanup(func() { s.Close() })
	}
	for i, dir := range dirs[1:] {
		if caFingerprint(t, dir) != caFingerprint(t, first) {
			t.Errorf("replica %d has CA %s; replica 0 %s", i+1, caFingerprint(t, dir), caFingerprint(t, first))
		}
		if !bytes.Equal(readFile(t, filepath.Join(dir, "admin.token")), readFile(t, filepath.Join(first, "admin.token"))) {
			t.Errorf("replica %d has another admin token than replica 0", i+1)
		}
	}
}

// A replica given another key file than the store's secrets were sealed
// with refuses to start, says why and what to do, and changes nothing:
// neither the store nor its data dir.
func TestReplicaWithAnotherKeyFileRefuses(t *testing.T) {
	a := servertest.Start(t, nil)
	storeKey, err := seal.LoadKeyFile(a.Server.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	before := storeSnapshot(t, a.DataDir)

	dir := replicaDir(t, a.DataDir)
	otherFile := filepath.Join(t.TempDir(), "other.key")
	other, err := seal.CreateKeyFile(otherFile)
	if err != nil {
		t.Fatal(err)
	}
	_, err = server.New(context.Background(), replicaConfig(dir, otherFile))
	want := fmt.Sprintf("the store's secrets are sealed with key %s; --key-file %s holds key %s: give every replica the same key file (docs/operations.md#key-file)",
		storeKey.ID(), otherFile, other.ID())
	if err == nil || err.Error() != want {
		t.Fatalf("New with another key file: got %v; want %q", err, want)
	}
	// Without a key file at all, a store with sealed secrets is refused
	// too, and no new key is made for it.
	_, err = server.New(context.Background(), replicaConfig(dir, ""))
	if err == nil || !strings.Contains(err.Error(), "sealed with key "+storeKey.ID()) || !strings.Contains(err.Error(), "no key file at "+filepath.Join(dir, server.DefaultKeyFile)) {
		t.Fatalf("New without a key file: got %v; want a refusal naming the store's key and the missing file", err)
	}

	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the refused replica's data dir holds %v; want only the store's link (no ca.crt, admin.token, server certificate or key file)", names)
	}
	if after := storeSnapshot(t, a.DataDir); after != before {
		t.Errorf("the refused replica changed the store:\nbefore %s\nafter  %s", before, after)
	}
	// The running replica is unharmed.
	if _, err := a.Client.ListNodes(context.Background()); err != nil {
		t.Errorf("replica a after the refusal: %v", err)
	}
}

// storeSnapshot is the store's sealed secrets and API tokens, as text.
func storeSnapshot(t *testing.T, dir string) string {
	t.Helper()
	raw := openRaw(t, dir)
	var out strings.Builder
	for _, q := range []string{`SELECT name, key_id, hex(sealed), created_at FROM server_secrets ORDER BY name`,
		`SELECT id, name, secret_hash, created_at FROM api_tokens ORDER BY id`} {
		rows, err := raw.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var a, b, c string
			var d int64
			if err := rows.Scan(&a, &b, &c, &d); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, "%s %s %s %d; ", a, b, c, d)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return out.String()
}

// openRaw opens the store of data dir dir with plain SQL, to look at what
// is really written.
func openRaw(t *testing.T, dir string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, db)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// The store holds the CA key and the admin token sealed: a copy of the
// store without the key file gives neither away.
func TestStoreHoldsNoPlaintextSecret(t *testing.T) {
	a := servertest.Start(t, nil)
	_, secret, err := pki.ParseAPIToken(a.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := openRaw(t, a.DataDir).Query(`SELECT name, sealed FROM server_secrets`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		var blob []byte
		if err := rows.Scan(&name, &blob); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		for _, plain := range []string{"BEGIN", "PRIVATE KEY", "CERTIFICATE", secret, a.AdminToken} {
			if bytes.Contains(blob, []byte(plain)) {
				t.Errorf("sealed %s holds %q in the clear", name, plain)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"admin-token", "ca"}) {
		t.Errorf("sealed secrets %v; want admin-token and ca", names)
	}
	// Nor anywhere else in the store's files: the database and its log.
	for _, f := range []string{db, db + "-wal"} {
		data := readFile(t, filepath.Join(a.DataDir, f))
		for _, plain := range []string{"PRIVATE KEY", secret} {
			if bytes.Contains(data, []byte(plain)) {
				t.Errorf("%s holds %q in the clear", f, plain)
			}
		}
	}
	// The key is in the key file only, not in the data dir's other files:
	// a new server no longer writes ca.key.
	if _, err := os.Stat(filepath.Join(a.DataDir, pki.CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a new server wrote %s: %v; want the CA key in the store only", pki.CAKeyFile, err)
	}
}

// A key file passed with --key-file that other users can read is refused,
// as ssh refuses such a private key, with the command that fixes it. (One
// in the data dir is narrowed with the rest of the data dir, with a
// warning.)
func TestServerRefusesAnOpenKeyFile(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	if _, err := seal.CreateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err := server.New(context.Background(), replicaConfig(dir, keyFile))
	if !errors.Is(err, seal.ErrKeyFileMode) || !strings.Contains(err.Error(), "chmod 600 "+keyFile) {
		t.Fatalf("New with a key file of mode 0644: got %v; want ErrKeyFileMode saying chmod 600 %s", err, keyFile)
	}
	if _, err := os.Stat(filepath.Join(dir, pki.CACertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused server made a CA: %v", err)
	}
}

// A data dir whose CA is not the store's (a server of another fleet, or
// one started on its own before joining) is refused: replacing its
// ca.crt would cut off the agents that trust it.
func TestReplicaWithAnotherCARefuses(t *testing.T) {
	a := servertest.Start(t, nil)
	dir := replicaDir(t, a.DataDir)
	other, _, err := pki.LoadOrCreateCA(dir) // ca.crt and ca.key, as a server from before sealing kept them
	if err != nil {
		t.Fatal(err)
	}
	_, err = server.New(context.Background(), replicaConfig(dir, a.Server.KeyFile()))
	if err == nil || !strings.Contains(err.Error(), other.Fingerprint()) || !strings.Contains(err.Error(), caFingerprint(t, a.DataDir)) {
		t.Fatalf("New on a data dir of another CA: got %v; want a refusal naming both CAs", err)
	}
	if got := caFingerprint(t, dir); got != other.Fingerprint() {
		t.Errorf("the refused replica's ca.crt is now %s; want it left as %s", got, other.Fingerprint())
	}
}

// A server from before sealing kept its CA in ca.crt and ca.key and had no
// key file. Upgraded, it seals that CA in the store and keeps its
// fingerprint, so the agents enrolled before go on connecting; and it
// leaves ca.key where it is, saying it can go once backed up.
func TestUpgradeKeepsTheCAOfTheDataDir(t *testing.T) {
	dir := t.TempDir()
	apiAddr, agentAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	start := func(logs *testenv.Buffer) *servertest.Fixture {
		return servertest.Start(t, func(cfg *server.Config) {
			cfg.DataDir, cfg.APIAddr, cfg.AgentAddr = dir, apiAddr, agentAddr
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		})
	}
	old := start(&testenv.Buffer{})
	fingerprint, adminToken := caFingerprint(t, dir), old.AdminToken

	// An agent enrolls and connects.
	tok, err := old.Client.CreateToken(context.Background(), api.TokenRequest{Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	var connected atomic.Int32
	acfg := agent.DefaultConfig()
	acfg.Server, acfg.Token, acfg.DataDir, acfg.Name = agentAddr, tok.Token, t.TempDir(), "edge-1"
	acfg.Runtime, acfg.ResyncInterval, acfg.MaxBackoff = fakert.New(), 200*time.Millisecond, 300*time.Millisecond
	acfg.Hooks.OnConnected = func(string) { connected.Add(1) }
	ag, err := agent.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testenv.Eventually(t, 30*time.Second, "the agent to connect", func() error {
		if connected.Load() < 1 {
			return errors.New("not connected")
		}
		return nil
	})
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	toPreSealLayout(t, dir)

	var logs testenv.Buffer
	upgraded := start(&logs)
	if got := caFingerprint(t, dir); got != fingerprint {
		t.Fatalf("after the upgrade the CA is %s; want the data dir's %s", got, fingerprint)
	}
	if upgraded.AdminToken != adminToken {
		t.Error("after the upgrade the admin token changed; want the data dir's")
	}
	testenv.Eventually(t, 30*time.Second, "the agent enrolled before the upgrade to connect again", func() error {
		if n := connected.Load(); n < 2 {
			return fmt.Errorf("%d connections; want a second one", n)
		}
		return nil
	})
	nodes, err := upgraded.Client.ListNodes(context.Background())
	if err != nil || len(nodes) != 1 || nodes[0].Name != "edge-1" {
		t.Errorf("nodes after the upgrade: %v, %v; want edge-1", nodes, err)
	}
	if _, err := os.Stat(filepath.Join(dir, pki.CAKeyFile)); err != nil {
		t.Errorf("the upgrade removed %s: %v; want it left for the operator", pki.CAKeyFile, err)
	}
	if !strings.Contains(logs.String(), "sealed the data dir's CA in the store") || !strings.Contains(logs.String(), filepath.Join(dir, pki.CAKeyFile)) {
		t.Errorf("the upgrade did not say that ca.key can go:\n%s", logs.String())
	}
	// The CA is in the store now: a replica with a new data dir gets it.
	replica := servertest.Start(t, func(cfg *server.Config) { cfg.DataDir, cfg.KeyFile = replicaDir(t, dir), upgraded.Server.KeyFile() })
	if got := caFingerprint(t, replica.DataDir); got != fingerprint {
		t.Errorf("a replica after the upgrade has CA %s; want %s", got, fingerprint)
	}
}

// toPreSealLayout turns the data dir of a stopped server into what a server
// from before sealing left: the CA in ca.crt and ca.key, nothing sealed in
// the store, no key file.
func toPreSealLayout(t *testing.T, dir string) {
	t.Helper()
	keyFile := filepath.Join(dir, server.DefaultKeyFile)
	key, err := seal.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw := openRaw(t, dir)
	var blob []byte
	if err := raw.QueryRow(`SELECT sealed FROM server_secrets WHERE name = 'ca'`).Scan(&blob); err != nil {
		t.Fatal(err)
	}
	plain, err := key.Open("ca", blob)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA("test", plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CAKeyFile), plain[len(ca.CertPEM()):], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`DELETE FROM server_secrets`); err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
}

// The bootstrap admin token, once revoked, stays revoked: a later start
// neither makes it valid again nor writes it to admin.token.
func TestRetiredBootstrapTokenStaysRetired(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start := func() *servertest.Fixture {
		return servertest.Start(t, func(cfg *server.Config) { cfg.DataDir = dir })
	}
	first := start()
	boot := first.AdminToken
	if _, err := first.Client.CreateUser(ctx, "alice", "a passphrase long enough"); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Client.CreateBinding(ctx, api.Binding{Subject: "user:alice", Role: "admin", Project: "*"}); err != nil {
		t.Fatal(err)
	}
	toks, err := first.Client.ListAPITokens(ctx, true)
	if err != nil || len(toks) != 1 || toks[0].Kind != api.TokenBootstrap {
		t.Fatalf("tokens %+v, %v; want the bootstrap token alone", toks, err)
	}
	if err := first.Client.RevokeAPIToken(ctx, toks[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Client.Whoami(ctx); !client.IsUnauthorized(err) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("the revoked bootstrap token: %v; want 401 saying it was revoked", err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	again := start()
	if again.AdminToken != "" {
		t.Error("a restart wrote admin.token again")
	}
	c, err := client.New(client.Config{Addr: again.Server.APIURL(), Token: boot, CACertFile: again.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Whoami(ctx); !client.IsUnauthorized(err) {
		t.Errorf("the bootstrap token after a restart: %v; want 401", err)
	}
	l, err := c.Login(ctx, "alice", "a passphrase long enough")
	if err != nil {
		t.Fatalf("the admin it left behind cannot log in: %v", err)
	}
	if l.User != "alice" {
		t.Errorf("login: %+v", l)
	}
}
