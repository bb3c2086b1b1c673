// Package pgserver runs a PostgreSQL server of its own from the machine's
// PostgreSQL binaries (initdb, postgres): a fresh cluster in a directory,
// listening on a free loopback port and a Unix socket in that directory,
// with the settings its caller gives. internal/pgtest starts one per test
// binary; the scale benchmark (bench/scale -store postgres) one per run.
//
// initdb and postgres refuse to run as root: as root, they run as the
// postgres user, which then owns the directory.
package pgserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNotInstalled is the absence of what a server needs: PostgreSQL's
// binaries, or, as root, a postgres user to run them as.
var ErrNotInstalled = errors.New("pgserver: PostgreSQL is not installed")

// Config says where and how a server runs.
type Config struct {
	// Dir holds the cluster (Dir/data) and the server's Unix socket; it
	// is created if missing, and its parent must let the postgres user
	// through when running as root.
	Dir string
	// Settings are postgres's -c name=value parameters, on top of
	// listen_addresses, port and unix_socket_directories, which Start sets.
	Settings []string
	// Log takes postgres's output; nil discards it. Start's error holds
	// what it said before it was ready.
	Log io.Writer
}

// Server is a running postgres.
type Server struct {
	// URL is its superuser's URL (user postgres, trust authentication
	// on loopback) of the postgres database.
	URL  string
	Port int
	// Version is `postgres --version`'s number, "15.4".
	Version string

	cmd    *exec.Cmd
	exited chan struct{}
}

// BinDir finds the directory of initdb and postgres: PATH's, or the
// newest under /usr/lib/postgresql (Debian's).
func BinDir() (string, error) {
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
	return "", fmt.Errorf("%w: no initdb in PATH nor PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)", ErrNotInstalled)
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// credential is who runs initdb and postgres: nil for this process's
// user, the postgres user as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: running as root, and no postgres user to run PostgreSQL as: %v", ErrNotInstalled, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start makes a cluster in cfg.Dir and runs postgres on it until Stop,
// or until this process dies (postgres gets SIGQUIT then, on Linux).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(cfg.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	ver, err := exec.CommandContext(ctx, filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("postgres --version: %w", err)
	}
	data := filepath.Join(cfg.Dir, "data")
	// --no-sync: a crash during initdb leaves nothing worth keeping.
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
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
		s, err := run(ctx, cfg, bin, data, port, cred)
		if err == nil {
			f := strings.Fields(string(ver)) // "postgres (PostgreSQL) 15.4 (Debian 15.4-1)"
			if len(f) >= 3 {
				s.Version = f[2]
			}
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
func run(ctx context.Context, cfg Config, bin, data string, port int, cred *syscall.Credential) (*Server, error) {
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + cfg.Dir}
	for _, s := range cfg.Settings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
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
			_, _ = fmt.Fprintln(cfg.Log, sc.Text())
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
		_, _ = io.Copy(cfg.Log, stderr) // after a line too long to scan
		_ = cmd.Wait()
	}()
	s := &Server{URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), Port: port, cmd: cmd, exited: exited}
	select {
	case <-ready:
		return s, nil
	case <-exited:
		return nil, fmt.Errorf("postgres exited before it was ready:\n%s", log.String())
	case <-ctx.Done():
		s.kill()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		s.kill()
		return nil, fmt.Errorf("postgres not ready after 60s:\n%s", log.String())
	}
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// PID is the postmaster's process ID; the backends are its children.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Exited is closed when postgres has ended.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Stop ends the server with a fast shutdown (SIGINT: it ends the sessions
// and stops), and kills it if it is not gone within grace.
func (s *Server) Stop(grace time.Duration) {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(grace):
		s.kill()
	}
}
