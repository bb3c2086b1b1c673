// Command rollout is dockfleet's rollout benchmark on real Docker (DESIGN §9):
// in one run, on the local daemon, it makes N replicas of hello:v1 healthy
// and then rolls them to hello:v2 in batches, three ways:
//
//   - swarm: Docker Swarm on the same engine (a one-node swarm it starts and
//     leaves again), a service of N replicas with a HEALTHCHECK, updated with
//     --update-parallelism BATCH, --update-delay 0s, stop-first;
//   - dockfleet: the real binary as a server and three agents on the same
//     daemon, a replicated deployment of N with batchSize BATCH,
//     maxUnavailable BATCH and minHealthyTime 0s;
//   - raw: the Docker API called directly, in parallel: the engine's own
//     limit for the same work, with no control plane in the way.
//
// Each system is timed from the request (service create or update, apply,
// first API call) until all N containers of the target image answer their
// health check. It prints a table, or JSON with -o json, and cleans up
// everything it made: every container it creates carries the label
// dockfleet-bench=RUN and is removed at the end, even on failure or Ctrl-C.
//
// Run it with `make bench` (which builds bin/dockfleet and the hello images
// first) or `go run ./bench/rollout -h`. BENCHMARKS.md records its results.
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
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
)

// Systems, in the order a run measures them.
const (
	sysSwarm     = "swarm"
	sysDockfleet = "dockfleet"
	sysRaw       = "raw"
)

var allSystems = []string{sysSwarm, sysDockfleet, sysRaw}

// Phases of one measurement.
const (
	phaseCreate = "create"
	phaseUpdate = "update"
	phaseTotal  = "total"
)

// Targets from DESIGN §9: dockfleet's time over the others'.
const (
	targetVsSwarm = 0.7
	targetVsRaw   = 1.2
)

// benchLabel marks every container (and the swarm, and the service) the
// benchmark makes; its value is the run ID. It is not "dockfleet.bench":
// keys starting with "dockfleet." are reserved in deployment specs, and one
// key for all three systems keeps the clean-up one filter.
const benchLabel = "dockfleet-bench"

// config is the benchmark's flags.
type config struct {
	n         int
	batch     int
	runs      int
	output    string
	systems   []string
	bin       string
	imageV1   string
	imageV2   string
	check     string // dockfleet's health check: http or exec
	parallel  int    // raw: Docker API calls in flight while creating
	rawGated  bool   // raw: create in health-gated batches too
	poll      time.Duration
	timeout   time.Duration
	logDir    string
	warmup    bool
	runID     string
	command   string
	logWriter io.Writer // progress, on stderr
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return benchenv.Run("rollout", args, stdout, stderr, parseFlags, func(c config) bool { return c.output == "json" },
		func(ctx context.Context, c config) (benchenv.Report, error) {
			rep, err := bench(ctx, c)
			if rep == nil {
				return nil, err // no report to print
			}
			return rep, err
		})
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("rollout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench/rollout [flags]\n\n"+
			"Times N replicas of hello:v1 made healthy, then rolled to hello:v2 in batches,\n"+
			"under Docker Swarm, dockfleet and raw Docker API calls, on the local daemon.\n"+
			"Needs bin/dockfleet (make build) and the hello images (make images).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg config
	var systems string
	fs.IntVar(&cfg.n, "n", 30, "replicas")
	fs.IntVar(&cfg.batch, "batch", 5, "update batch size (swarm --update-parallelism, dockfleet batchSize and maxUnavailable, raw batch)")
	fs.IntVar(&cfg.runs, "runs", 1, "measure every system this many times and report the medians")
	fs.StringVar(&cfg.output, "o", "table", "output: table or json")
	fs.StringVar(&systems, "systems", strings.Join(allSystems, ","), "systems to measure, comma-separated")
	fs.StringVar(&cfg.bin, "bin", "bin/dockfleet", "the dockfleet binary to run as server and agents")
	fs.StringVar(&cfg.imageV1, "image-v1", "hello:v1", "image of the first revision")
	fs.StringVar(&cfg.imageV2, "image-v2", "hello:v2", "image rolled out by the update")
	fs.StringVar(&cfg.check, "check", "http", "dockfleet's health check: http (GET :8080/healthz from the agent) or exec (/hello -check in the container, as swarm does)")
	fs.IntVar(&cfg.parallel, "parallel", 10, "raw: containers created and started at once while creating (the update does a batch at once)")
	fs.BoolVar(&cfg.rawGated, "raw-gated", false, "raw: create in health-gated batches of -batch too, as dockfleet's first rollout does (default: all at once, -parallel in flight)")
	fs.DurationVar(&cfg.poll, "poll", 50*time.Millisecond, "how often the benchmark looks: swarm's tasks, raw's /healthz; dockfleet is followed by long poll")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "longest one phase may take")
	fs.StringVar(&cfg.logDir, "logs", "", "keep the dockfleet server's and agents' logs in this directory (default: a temporary one, kept only on failure)")
	fs.BoolVar(&cfg.warmup, "warmup", true, "create and remove one container of each image before measuring, so no system pays for a cold cache")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q; see -h", fs.Args())
	}
	switch {
	case cfg.n < 1:
		return cfg, fmt.Errorf("-n %d: want at least 1", cfg.n)
	case cfg.batch < 1 || cfg.batch > cfg.n:
		return cfg, fmt.Errorf("-batch %d: want 1 to -n (%d)", cfg.batch, cfg.n)
	case cfg.runs < 1:
		return cfg, fmt.Errorf("-runs %d: want at least 1", cfg.runs)
	case cfg.output != "table" && cfg.output != "json":
		return cfg, fmt.Errorf("-o %q: want table or json", cfg.output)
	case cfg.check != "http" && cfg.check != "exec":
		return cfg, fmt.Errorf("-check %q: want http or exec", cfg.check)
	case cfg.parallel < 1:
		return cfg, fmt.Errorf("-parallel %d: want at least 1", cfg.parallel)
	case cfg.poll <= 0 || cfg.timeout <= 0:
		return cfg, errors.New("-poll and -timeout must be more than 0s")
	}
	for _, s := range strings.Split(systems, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allSystems, s) {
			return cfg, fmt.Errorf("-systems: unknown system %q; want some of %s", s, strings.Join(allSystems, ","))
		}
		if !slices.Contains(cfg.systems, s) {
			cfg.systems = append(cfg.systems, s)
		}
	}
	// Measure in a fixed order whatever the flag's order.
	slices.SortFunc(cfg.systems, func(a, b string) int { return slices.Index(allSystems, a) - slices.Index(allSystems, b) })
	var id [4]byte
	rand.Read(id[:])
	cfg.runID = hex.EncodeToString(id[:])
	cfg.command = "go run ./bench/rollout " + strings.Join(args, " ")
	cfg.logWriter = stderr
	return cfg, nil
}

func (c config) logf(format string, a ...any) {
	fmt.Fprintf(c.logWriter, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// measurement is one system's times in one run.
type measurement struct {
	Create time.Duration
	Update time.Duration
}

// system is one way of doing the work. setup and teardown are not timed;
// teardown runs even when a phase failed.
type system interface {
	setup(ctx context.Context) error
	create(ctx context.Context) error
	update(ctx context.Context) error
	teardown(ctx context.Context) error
}

// bench measures every selected system cfg.runs times and returns the report.
func bench(ctx context.Context, cfg config) (*report, error) {
	dc, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("configuring the docker client: %w", err)
	}
	defer dc.Close()
	d := &docker{c: dc, cfg: cfg}
	if err := d.preflight(ctx); err != nil {
		return nil, err
	}
	rep := newReport(ctx, cfg, d)
	cfg.logf("run %s: n=%d batch=%d runs=%d systems=%s on %s", cfg.runID, cfg.n, cfg.batch, cfg.runs,
		strings.Join(cfg.systems, ","), rep.Machine.summary())
	if rep.Machine.OtherContainers > 0 {
		cfg.logf("warning: %d other containers run on this daemon; they may skew the times", rep.Machine.OtherContainers)
	}
	// Whatever happens, nothing labelled with this run survives it.
	defer func() {
		cctx, cancel := cleanupContext()
		defer cancel()
		if err := d.removeAll(cctx); err != nil {
			cfg.logf("clean-up: %v", err)
		}
	}()
	if cfg.warmup {
		if err := d.warmup(ctx); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.runs; i++ {
		for _, name := range cfg.systems {
			var s system
			switch name {
			case sysSwarm:
				s = &swarmBench{d: d, cfg: cfg}
			case sysDockfleet:
				s = &fleetBench{d: d, cfg: cfg, run: i + 1}
			case sysRaw:
				s = &rawBench{d: d, cfg: cfg}
			}
			cfg.logf("run %d/%d: %s", i+1, cfg.runs, name)
			m, err := measure(ctx, cfg, name, s)
			if err != nil {
				rep.finish(ctx, d)
				return rep, fmt.Errorf("run %d, %s: %w", i+1, name, err)
			}
			cfg.logf("run %d/%d: %s: create %s, update %s", i+1, cfg.runs, name, round(m.Create), round(m.Update))
			rep.add(name, m)
		}
	}
	rep.finish(ctx, d)
	return rep, nil
}

// measure times one system's two phases, with its setup and teardown around them.
func measure(ctx context.Context, cfg config, name string, s system) (m measurement, err error) {
	defer func() {
		cctx, cancel := cleanupContext()
		defer cancel()
		if terr := s.teardown(cctx); terr != nil {
			err = errors.Join(err, fmt.Errorf("tearing down %s: %w", name, terr))
		}
	}()
	if err := s.setup(ctx); err != nil {
		return m, fmt.Errorf("setting up: %w", err)
	}
	phase := func(what string, f func(context.Context) error) (time.Duration, error) {
		pctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
		begin := time.Now()
		if err := f(pctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return 0, fmt.Errorf("%s: not done within -timeout %s: %w", what, cfg.timeout, err)
			}
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		return time.Since(begin), nil
	}
	if m.Create, err = phase(phaseCreate, s.create); err == nil {
		m.Update, err = phase(phaseUpdate, s.update)
	}
	if k, ok := s.(interface{ keepLogs() }); ok && err != nil {
		k.keepLogs()
	}
	return m, err
}

// cleanupContext bounds a clean-up that must run even after Ctrl-C.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// poll calls cond every interval until it reports done, fails, or ctx ends;
// the error on timeout says what cond last reported.
func poll(ctx context.Context, interval time.Duration, cond func(context.Context) (done bool, status string, err error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	status := ""
	for {
		done, st, err := cond(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if done {
			return nil
		}
		if st != "" {
			status = st
		}
		select {
		case <-ctx.Done():
			if status != "" {
				return fmt.Errorf("%s: %w", status, ctx.Err())
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
