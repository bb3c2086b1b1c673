// Package pgtest gives tests a real PostgreSQL: one server per test binary,
// started on first use from the machine's PostgreSQL binaries into a
// temporary directory (internal/pgserver), and a fresh database for each
// test (DSN), dropped when the test ends. The server runs without durability (fsync off): it
// holds nothing that must survive it.
//
// Without PostgreSQL binaries a test that asks for a database is skipped,
// or fails when the environment variable CI is "true". When
// DOCKFLEET_TEST_POSTGRES holds a URL of an existing server, the databases
// are made there instead (its user must be allowed to create databases).
//
// A package whose tests use it stops the server from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// or, with goleak, goleak.VerifyTestMain(pgtest.Wrap(m)). A test binary
// that dies anyway takes the server with it (it gets SIGQUIT then).
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/dockfleet/dockfleet/internal/pgserver"
)

// EnvURL names the environment variable of an existing server's URL.
const EnvURL = "DOCKFLEET_TEST_POSTGRES"

var (
	mu     sync.Mutex
	srv    *server // the running server or connection, nil before the first DSN
	srvErr error   // why there is none
	skip   bool    // srvErr is the absence of PostgreSQL, not a failure
	dbs    atomic.Int64
)

// server is where the tests' databases are made.
type server struct {
	admin *sql.DB
	// base is the URL of the admin database; a test's names another.
	base string
	// pg is the server pgtest started, nil for DOCKFLEET_TEST_POSTGRES's.
	pg  *pgserver.Server
	dir string
}

// DSN returns the URL of a new, empty database, dropped when t ends.
func DSN(t testing.TB) string {
	t.Helper()
	s := start()
	if s == nil {
		if skip && os.Getenv("CI") != "true" {
			t.Skipf("skipping: no PostgreSQL: %v", srvErr)
		}
		t.Fatalf("PostgreSQL is required when CI=true: %v", srvErr)
	}
	name := fmt.Sprintf("dockfleet_test_%d_%d", os.Getpid(), dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A small template, no fsync: the file copy is the faster way.
	if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name+" STRATEGY FILE_COPY"); err != nil {
		t.Fatalf("creating test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE ends the connections a test left open.
		if _, err := s.admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
	return withDatabase(s.base, name)
}

// withDatabase is the URL or keyword/value DSN base naming database name.
func withDatabase(base, name string) string {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err == nil {
			u.Path = "/" + name
			return u.String()
		}
	}
	return base + " dbname=" + name // the last of a key's values counts
}

// Main runs m's tests, stops the server they started, and exits with
// their result.
func Main(m *testing.M) {
	os.Exit(Wrap(m).Run())
}

// Wrap returns m with a Run that stops the server after the tests, for a
// TestMain that hands m on (to goleak.VerifyTestMain).
func Wrap(m interface{ Run() int }) interface{ Run() int } { return stopping{m} }

type stopping struct{ m interface{ Run() int } }

func (s stopping) Run() int {
	code := s.m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Stop stops the server pgtest started, if it did, and removes its files.
func Stop() error {
	mu.Lock()
	defer mu.Unlock()
	s := srv
	srv, srvErr, skip = nil, errors.New("pgtest: stopped"), false
	if s == nil {
		return nil
	}
	s.admin.Close()
	if s.pg == nil {
		return nil
	}
	s.pg.Stop(30 * time.Second)
	return os.RemoveAll(s.dir)
}

func start() *server {
	mu.Lock()
	defer mu.Unlock()
	if srv != nil || srvErr != nil {
		return srv
	}
	if u := os.Getenv(EnvURL); u != "" {
		srv, srvErr = connect(u, nil)
		if srvErr != nil {
			srvErr = fmt.Errorf("%s: %w", EnvURL, srvErr)
		}
		return srv
	}
	srv, srvErr = launch()
	return srv
}

// settings are the test server's: no durability (it holds nothing that
// must survive it), room for many tests' connections.
var settings = []string{"fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300", "shared_buffers=32MB"}

// launch starts a server of its own on a free loopback port.
func launch() (*server, error) {
	dir, err := os.MkdirTemp("", "dockfleet-pgtest-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgserver.Start(ctx, pgserver.Config{Dir: dir, Settings: settings})
	if err != nil {
		os.RemoveAll(dir)
		skip = errors.Is(err, pgserver.ErrNotInstalled)
		return nil, err
	}
	s, err := connect(pg.URL, pg)
	if err != nil {
		pg.Stop(30 * time.Second)
		os.RemoveAll(dir)
		return nil, err
	}
	s.dir = dir
	return s, nil
}

// connect opens the admin connection of the server at base.
func connect(base string, pg *pgserver.Server) (*server, error) {
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return &server{admin: db, base: base, pg: pg}, nil
}
