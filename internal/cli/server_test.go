package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestServerStartsAndStops runs the real server command on loopback ports,
// and checks that it says where its files are and exits 0 when its context
// ends, as on Ctrl-C.
func TestServerStartsAndStops(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr testenv.Buffer
	e := &env{
		stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(string) string { return "" }, now: time.Now,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"server", "--data-dir", dir, "--api-addr", "127.0.0.1:0",
			"--agent-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "warn"}, e)
	}()
	testenv.Eventually(t, 10*time.Second, "the server's banner", func() error {
		select {
		case code := <-done:
			t.Fatalf("server exited with %d before it was up\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
		default:
		}
		if !strings.Contains(stdout.String(), "key file:") {
			return fmt.Errorf("no banner\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
		}
		return nil
	})
	for _, file := range []string{"ca.crt", "admin.token", "store.key"} {
		path := filepath.Join(dir, file)
		if !strings.Contains(stdout.String(), path) {
			t.Errorf("stdout does not name %s:\n%s", path, stdout.String())
		}
		if _, err := os.Stat(path); err != nil {
			t.Error(err)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code %d after the context ended; want 0\nstderr: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop in 10s after its context ended")
	}
}

// TestServerStoreUnreachable checks that a server whose PostgreSQL does not
// answer stops at once, saying where it tried, without the password.
func TestServerStoreUnreachable(t *testing.T) {
	r := runCLI(t, nil, "", "server", "--data-dir", t.TempDir(), "--api-addr", "127.0.0.1:0", "--agent-addr", "127.0.0.1:0",
		"--store", "postgres://dockfleet:s3cret@127.0.0.1:1/fleet")
	want := "store: connecting to PostgreSQL at 127.0.0.1:1 (database fleet, user dockfleet): connection refused"
	if r.code != exitFailure || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "s3cret") {
		t.Errorf("exit code %d, stderr %q; want %d and %q, without the password", r.code, r.stderr, exitFailure, want)
	}
}

// TestServerKeyFileFlag: --key-file names the key file, and one that does
// not open the store's secrets stops the server at start with the reason.
func TestServerKeyFileFlag(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	args := []string{"server", "--data-dir", dir, "--key-file", keyFile, "--api-addr", "127.0.0.1:0",
		"--agent-addr", "127.0.0.1:0", "--log-level", "warn"}
	var stdout, stderr testenv.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(string) string { return "" }, now: time.Now}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, e) }()
	testenv.Eventually(t, 10*time.Second, "the server's banner", func() error {
		select {
		case code := <-done:
			t.Fatalf("server exited with %d before it was up\nstderr: %s", code, stderr.String())
		default:
		}
		if !strings.Contains(stdout.String(), "key file:     "+keyFile) {
			return fmt.Errorf("no banner naming %s\nstdout: %s", keyFile, stdout.String())
		}
		return nil
	})
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d; want 0\n%s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "store.key")); err == nil {
		t.Error("a key file was made in the data dir too; want only the one --key-file names")
	}

	// Started again without it, the server refuses: the store's secrets
	// are sealed with its key.
	if err := os.Rename(keyFile, keyFile+".old"); err != nil {
		t.Fatal(err)
	}
	var refused testenv.Buffer
	code := run(context.Background(), args, &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &refused,
		getenv: func(string) string { return "" }, now: time.Now})
	if code == exitOK || !strings.Contains(refused.String(), "no key file at "+keyFile) {
		t.Errorf("start without the store's key file: exit %d; want a failure saying there is no key file at %s\n%s", code, keyFile, refused.String())
	}
}
