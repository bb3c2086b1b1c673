// Command hello is dockfleet's demo and test workload: a tiny static HTTP
// server that says which version it is. The same binary, built with
// different -ldflags, becomes the images hello:v1, hello:v2 and hello:broken
// (whose /healthz fails), so tests can drive rollouts and health checks
// without pulling anything.
//
// Run with -check URL it performs one GET and exits 0 when the answer is 2xx
// or 3xx, 1 otherwise: images built FROM scratch have no shell or curl, and
// this is what an exec health check calls.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Set with -ldflags "-X main.version=v1 -X main.broken=true".
var (
	version = "dev"
	broken  = "false"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("HELLO_ADDR", ":8080"), "listen address (env HELLO_ADDR)")
	check := fs.String("check", "", "GET this URL, exit 0 on 2xx/3xx and 1 otherwise, then quit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *check != "" {
		if err := checkURL(*check, 5*time.Second); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}

	isBroken, err := strconv.ParseBool(broken)
	if err != nil {
		fmt.Fprintf(stderr, "main.broken %q: %v\n", broken, err)
		return 2
	}
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "unknown"
	}

	// The server runs as PID 1 in its container, where SIGTERM is ignored
	// unless handled: without this, docker stop waits for its timeout.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := &http.Server{
		Addr:              *addr,
		Handler:           newHandler(version, hostname, isBroken),
		ReadHeaderTimeout: 5 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Fprintf(stdout, "hello %s listening on %s\n", version, *addr)

	select {
	case err := <-errc:
		fmt.Fprintln(stderr, err)
		return 1
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func newHandler(version, hostname string, broken bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if broken {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, version)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s on %s\n", version, hostname)
	})
	return mux
}

// checkURL GETs url without following redirects, as dockfleet's HTTP probe
// does, so a 3xx passes here too.
func checkURL(url string, timeout time.Duration) error {
	c := &http.Client{
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
