// Command agent is dockfleet's agent footprint benchmark (DESIGN §9: an
// idle agent managing 20 containers holds at most 20 MiB resident and uses
// at most 1 % of a core). It runs the real binary as a server and one
// agent, separate processes on loopback, the agent on the local Docker
// daemon; applies a replicated deployment of N hello:v1 containers with an
// HTTP health check, all on that agent's node; waits until every one is
// healthy and lets the agent settle; then, over a window with the agent
// idle but for its health checks, heartbeats and resyncs, it measures the
// agent process's CPU (utime+stime from /proc/PID/stat) and its resident
// memory (VmRSS and VmHWM from /proc/PID/status, split into anonymous and
// file-backed pages). With -gctrace (the default) the agent runs with
// GODEBUG=gctrace=1, and the report gives its Go heap from the last
// collection: the agent has no debug endpoint of its own.
//
// It prints a table, or JSON with -o json, and removes everything it made
// at the end, on failure and on Ctrl-C too: the containers (by the agent's
// node label), the processes and the work directory with their logs
// (-keep keeps it). Run it with `make bench-agent` (which builds bin/dockfleet and
// the hello images first) or `go run ./bench/agent -h`. BENCHMARKS.md
// records its results.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
)

// config is the benchmark's flags.
type config struct {
	n         int
	image     string
	interval  time.Duration // of the containers' HTTP health check
	settle    time.Duration // idle time before the window
	window    time.Duration // how long CPU is measured
	gctrace   bool
	bin       string
	output    string
	keep      bool
	timeout   time.Duration
	runID     string
	command   string
	logWriter io.Writer // progress, on stderr
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return benchenv.Run("agent", args, stdout, stderr, parseFlags, func(c config) bool { return c.output == "json" },
		func(ctx context.Context, c config) (benchenv.Report, error) {
			rep, err := bench(ctx, c)
			if rep == nil {
				return nil, err // no report to print
			}
			return rep, err
		})
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench/agent [flags]\n\n"+
			"Runs a real dockfleet server and one real agent on the local Docker daemon, gives the agent N\n"+
			"healthy containers, and measures the idle agent's resident memory and CPU.\n"+
			"Needs bin/dockfleet (make build) and the hello images (make images). Linux only (it reads /proc).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg config
	fs.IntVar(&cfg.n, "n", 20, "containers on the agent's node (replicas of one deployment)")
	fs.StringVar(&cfg.image, "image", "hello:v1", "the containers' image; it must answer GET :8080/healthz")
	fs.DurationVar(&cfg.interval, "interval", 2*time.Second, "the containers' health check interval (examples/hello's)")
	fs.DurationVar(&cfg.settle, "settle", 15*time.Second, "idle time after all containers are healthy, before the window")
	fs.DurationVar(&cfg.window, "window", 60*time.Second, "how long the idle agent's CPU is measured")
	fs.BoolVar(&cfg.gctrace, "gctrace", true, "run the agent with GODEBUG=gctrace=1 and report its Go heap (one line in its log per collection)")
	fs.StringVar(&cfg.bin, "bin", "bin/dockfleet", "the dockfleet binary to run as server and agent")
	fs.StringVar(&cfg.output, "o", "table", "output: table or json")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work directory: the server's and agent's data and logs")
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Minute, "longest the setup (server, agent, containers healthy) may take")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q; see -h", fs.Args())
	}
	switch {
	case cfg.n < 1:
		return cfg, fmt.Errorf("-n %d: want at least 1", cfg.n)
	case cfg.output != "table" && cfg.output != "json":
		return cfg, fmt.Errorf("-o %q: want table or json", cfg.output)
	case cfg.settle < 0:
		return cfg, fmt.Errorf("-settle %s: want 0s or more", cfg.settle)
	case cfg.interval <= 0 || cfg.window <= 0 || cfg.timeout <= 0:
		return cfg, errors.New("-interval, -window and -timeout must be more than 0s")
	}
	var id [4]byte
	rand.Read(id[:])
	cfg.runID = hex.EncodeToString(id[:])
	cfg.command = strings.TrimSpace("go run ./bench/agent " + strings.Join(args, " "))
	cfg.logWriter = stderr
	return cfg, nil
}

func (c config) logf(format string, a ...any) {
	fmt.Fprintf(c.logWriter, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}
