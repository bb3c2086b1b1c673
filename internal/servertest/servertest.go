// Package servertest runs a real dockfleet server (SQLite, TLS, gRPC) in a
// test's process, on loopback ports, for the tests of the packages that
// talk to it: the agent, the simulator, the CLI. Its server asks no
// registry (testenv.NoRegistry).
//
// The server package's own tests cannot use it (servertest imports
// server); they have a helper of their own that reaches private fields.
package servertest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// Fixture is a running server and what a test needs to reach it.
type Fixture struct {
	Server *server.Server
	// Client calls the REST API as the bootstrap admin.
	Client *client.Client
	// AdminToken is the bootstrap admin API token, CAFile the path of the
	// CA certificate clients and agents trust.
	AdminToken string
	CAFile     string
	// AgentAddr is the host:port agents connect to.
	AgentAddr string
	// DataDir is the server's; a server started again on it is the same
	// server, with the same CA and nodes.
	DataDir string

	cancel context.CancelFunc
	done   chan error
	stop   sync.Once
	err    error
}

// Start runs a server until the test ends. Its configuration is
// server.DefaultConfig with a new temporary data dir, 127.0.0.1:0 for both
// listeners and testenv.NoRegistry for the resolver; configure, if not
// nil, changes it before the server is made.
func Start(t testing.TB, configure func(*server.Config)) *Fixture {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.APIAddr, cfg.AgentAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Resolve = testenv.NoRegistry
	if configure != nil {
		configure(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f := &Fixture{Server: srv, CAFile: srv.CAFile(), AgentAddr: srv.AgentAddr(), DataDir: cfg.DataDir,
		cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		if err := f.Stop(); err != nil {
			t.Errorf("server: %v", err)
		}
	})
	// A server whose bootstrap token was retired writes none.
	tok, err := os.ReadFile(srv.AdminTokenFile())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	f.AdminToken = strings.TrimSpace(string(tok))
	if f.Client, err = client.New(client.Config{Addr: srv.APIURL(), Token: f.AdminToken, CACertFile: f.CAFile}); err != nil {
		t.Fatal(err)
	}
	return f
}

// Stop stops the server and waits until Run has returned, with Run's
// error. Later calls return the same at once; the test's cleanup calls it.
func (f *Fixture) Stop() error {
	f.stop.Do(func() {
		f.cancel()
		f.err = <-f.done
	})
	return f.err
}
