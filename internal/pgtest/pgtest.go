// Package pgtest gives tests a real PostgreSQL: one server per test binary,
// started on first use from the machine's PostgreSQL binaries into a
// temporary directory, and a fresh database for each test (DSN), dropped
// when the test ends. The server runs without durability (fsync off): it
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
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
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
	// cmd is the postgres process pgtest started, nil for DOCKFLEET_TEST_POSTGRES's.
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
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
	if s.cmd == nil {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown: it ends the sessions and stops.
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
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

// binDir finds the directory of initdb and postgres: PATH's, or the
// newest under /usr/lib/postgresql (Debian's).
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no initdb in PATH nor PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)")
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// launch starts a server of its own on a free loopback port.
func launch() (*server, error) {
	bin, err := binDir()
	if err != nil {
		skip = true
		return nil, err
	}
	// initdb and postgres refuse to run as root: they run as the postgres
	// user then, which owns the data directory.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skip = true
			return nil, fmt.Errorf("running as root, and no postgres user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "dockfleet-pgtest-")
	if err != nil {
		return nil, err
	}
	s, err := launchIn(dir, bin, cred)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func launchIn(dir, bin string, cred *syscall.Credential) (*server, error) {
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// The port is free when asked, and may be taken before postgres binds
	// it: then another try.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := run(dir, bin, data, port, cred)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run starts postgres on port and waits until it says it is ready.
func run(dir, bin, data string, port int, cred *syscall.Credential) (*server, error) {
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = sysProcAttr(cred)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	var log strings.Builder // what postgres said until it was ready
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case <-ready:
				continue
			default:
			}
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "database system is ready to accept connections") {
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // after a line too long to scan
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-exited:
		return nil, fmt.Errorf("postgres exited before it was ready:\n%s", log.String())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("postgres not ready after 60s:\n%s", log.String())
	}
	base := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	s, err := connect(base, cmd)
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return nil, err
	}
	s.exited, s.dir = exited, dir
	return s, nil
}

// connect opens the admin connection of the server at base.
func connect(base string, cmd *exec.Cmd) (*server, error) {
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
	return &server{admin: db, base: base, cmd: cmd}, nil
}
