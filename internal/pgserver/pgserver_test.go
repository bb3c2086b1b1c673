package pgserver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dockfleet/dockfleet/internal/pgserver"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestStart runs a server with settings of its own: it answers on its URL
// with them, logs, and is gone after Stop.
func TestStart(t *testing.T) {
	// Not t.TempDir: as root, the postgres user must get through to the
	// server's directory, and t.TempDir's parent lets only root in.
	dir, err := os.MkdirTemp("", "pgserver-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log testenv.Buffer
	s, err := pgserver.Start(ctx, pgserver.Config{Dir: filepath.Join(dir, "pg"), Settings: []string{"max_connections=42", "fsync=off"}, Log: &log})
	if errors.Is(err, pgserver.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop(30 * time.Second)
		}
	})
	if s.Version == "" || s.PID() <= 0 || s.Port <= 0 {
		t.Errorf("server = %+v; want a version, a PID and a port", s)
	}
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		t.Fatalf("connecting to %s: %v", s.URL, err)
	}
	var maxConns string
	err = conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns)
	conn.Close(ctx)
	if err != nil || maxConns != "42" {
		t.Errorf("max_connections = %q, %v; want 42", maxConns, err)
	}
	s.Stop(30 * time.Second)
	stopped = true
	select {
	case <-s.Exited():
	default:
		t.Error("postgres runs after Stop")
	}
	if got := log.String(); !strings.Contains(got, "ready to accept connections") {
		t.Errorf("the log lacks postgres's readiness:\n%s", got)
	}
}
