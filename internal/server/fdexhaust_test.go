//go:build linux

package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/testenv"
)

// fdTestLimit is the open-file limit of the server under test: a few
// hundred, as in the review's reproduction (finding 3).
const fdTestLimit = 300

// A server whose open-file limit is a few hundred keeps serving while one
// address holds hundreds of idle unauthenticated connections to each of
// its listeners, HTTP/2 ones that answer PINGs: the API answers, a new
// agent enrolls and an enrolled agent reconnects. The server runs in a
// child process (this test binary, again) so that the limit is its own.
func TestFDExhaustionByUnauthenticatedClients(t *testing.T) {
	if dir := os.Getenv("DOCKFLEET_FD_TEST_SERVER"); dir != "" {
		serveUnderFDLimit(t, dir)
		return
	}
	if testing.Short() {
		if os.Getenv("CI") == "true" {
			t.Fatal("starts a server process: CI runs it, not -short")
		}
		t.Skip("starts a server process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFDExhaustionByUnauthenticatedClients$", "-test.v")
	cmd.Env = append(os.Environ(), "DOCKFLEET_FD_TEST_SERVER="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testenv.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the server stops when its stdin ends
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	out := bufio.NewScanner(stdout)
	var apiURL, agentAddr string
	for out.Scan() {
		if _, err := fmt.Sscanf(out.Text(), "serving %s %s", &apiURL, &agentAddr); err == nil {
			break
		}
	}
	if agentAddr == "" {
		t.Fatalf("the server process did not start; its stderr:\n%s", stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	f := &abuseFleet{}
	f.useServer(t, dir, apiURL, agentAddr)

	// An agent enrolled before the abuse, which must reconnect during it.
	creds := f.enroll(t, "enrolled-before", goodSource)

	const src, conns = "127.0.0.10", 250 // per listener: more than the limit, together
	var apiHeld, agentHeld []<-chan struct{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		apiHeld = holdMany(t, src, strings.TrimPrefix(apiURL, "https://"), conns, time.Second)
	}()
	go func() {
		defer wg.Done()
		agentHeld = holdMany(t, src, agentAddr, conns, 0)
	}()
	wg.Wait()
	t.Logf("the server took %d API and %d agent connections from %s", len(apiHeld), len(agentHeld), src)

	// Each check on a new connection, as a client that comes now makes.
	check := func(what string, fn func(ctx context.Context) error) {
		f.api.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := fn(ctx); err != nil {
			t.Errorf("%s while %s holds connections: %v", what, src, err)
		}
	}
	check("GET /v1/health", f.api.Health)
	check("listing nodes", func(ctx context.Context) error {
		_, err := f.api.ListNodes(ctx)
		return err
	})
	check("an enrolled agent reconnecting", func(ctx context.Context) error {
		_, err := openStream(ctx, f.conn(t, goodSource, creds))
		return err
	})
	f.enroll(t, "enrolled-during", goodSource) // fails the test if it cannot
	// And the abuser holds no more than its caps.
	deadline := time.Now().Add(2 * time.Second)
	if n := stillOpen(apiHeld, deadline); n > DefaultAPIConnsPerSource {
		t.Errorf("%s holds %d API connections; want %d at most", src, n, DefaultAPIConnsPerSource)
	}
	if n := stillOpen(agentHeld, deadline); n > DefaultAgentCertlessConnsPerSource {
		t.Errorf("%s holds %d agent connections without a certificate; want %d at most", src, n, DefaultAgentCertlessConnsPerSource)
	}
	if t.Failed() {
		t.Logf("the server's log:\n%s", stderr.String())
	}
}

// serveUnderFDLimit is the child process of
// TestFDExhaustionByUnauthenticatedClients: it lowers its own open-file
// limit, serves with dir as its data directory, prints its addresses and
// stops when its stdin ends.
func serveUnderFDLimit(t *testing.T, dir string) {
	lim := syscall.Rlimit{Cur: fdTestLimit, Max: fdTestLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := New(ctx, testConfig(t, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("serving %s %s\n", srv.APIURL(), srv.AgentAddr())
	if err := srv.Run(ctx); err != nil {
		t.Error(err)
	}
}
