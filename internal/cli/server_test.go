package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServerStartsAndStops runs the real server command on loopback ports,
// and checks that it says where its files are and exits 0 when its context
// ends, as on Ctrl-C.
func TestServerStartsAndStops(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr syncBuffer
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
	deadline := time.After(10 * time.Second)
	for !strings.Contains(stdout.String(), "admin token:") {
		select {
		case code := <-done:
			t.Fatalf("server exited with %d before it was up\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
		case <-deadline:
			t.Fatalf("server did not print its banner in 10s\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, file := range []string{"ca.crt", "admin.token"} {
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
