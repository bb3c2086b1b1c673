// Command scale is dockfleet's scale benchmark (DESIGN §8, §9): one real
// server (SQLite, TLS, every safety on: default flags, but for per-source
// limits sized to its crowded loopback addresses), or with -replicas R
// and -store postgres R server processes on one PostgreSQL (its own,
// started in the work dir, or -store-url's), and N simulated
// agents (`dockfleet sim`: the real agent code and protocol over an
// in-memory runtime), split over as many sim processes as the open-file
// limit asks (DESIGN §10), every connection on loopback. In one run it
// measures, in this order:
//
//   - connect: the time for all N agents to enroll and connect;
//   - idle: the server's resident memory and Go heap per connected idle
//     agent, and its CPU at steady 5 s heartbeats;
//   - fan-out: apply of a global deployment → every agent's ack of the
//     desired state that carries its instance (p50, p99, max);
//   - API: the latency of GET /v1/nodes and of describe deployment (GET
//     the deployment and its rollout, as the CLI does) with N agents
//     connected and N instances placed;
//   - rollout: a new revision across all N in 10 % batches with instant
//     health (no health check: a running container counts as healthy);
//   - rollback: a revision with an exec health check that 1 % of the
//     agents never pass, autoRollback on: the time until the rollout has
//     stopped, and until every instance is back on the previous revision;
//   - restart: SIGTERM of the server and a new one on the same data dir and
//     ports; the time until every agent has reconnected (a thundering herd
//     tamed by the agents' jittered backoff), and a check through the API
//     that no container was replaced. Replicas restart one at a time
//     (rolling): each one's agents move to the others or wait for it.
//
// With -replicas, memory and CPU are measured per replica (each one's
// agents counted from its established connections) and in all, and
// PostgreSQL's CPU beside them; -steps runs the first steps only.
//
// It prints one table, or JSON with -o json, and stops every process it
// started at the end, on failure and on Ctrl-C too. Run it with
// `make bench-scale N=1000` (which builds bin/dockfleet first) or
// `go run ./bench/scale -h`. BENCHMARKS.md records its results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
)

// Limits of one process and of the harness's defaults.
const (
	// defaultPerProcess keeps a sim process well under the 20,000 open
	// files one process may hold here (DESIGN §10): each agent holds one
	// connection, and one enrolling may briefly hold a second.
	defaultPerProcess = 9000
	// serverFileMargin is what the server needs besides one file per
	// agent: listeners, the store, API connections.
	serverFileMargin = 1000
	// simFileMargin is what a sim process needs besides one file per
	// agent: the default ramp of 200 enrollments at once, and its own.
	simFileMargin = 300
	// agentsPerSourceIP spreads each sim process over loopback source
	// addresses; one address gives about 28,000 ephemeral ports towards
	// the server, and enrollments leave connections in TIME_WAIT.
	agentsPerSourceIP = 4000
	// maxProcesses bounds the sim processes, and so the source addresses
	// (127.0.0.2 to 127.0.0.254).
	maxProcesses = 100
	// maxReplicas bounds -replicas: each is a server process on this
	// machine's cores.
	maxReplicas = 16
)

// stepNames are the steps -steps may name, in the order they run. Each
// needs connect; the API latency and the rollout need the deployment
// fan-out applies, the rollback the rollout's revision. The restart
// checks the deployment's containers when there is one.
var stepNames = []string{"connect", "idle", "fanout", "api", "rollout", "rollback", "restart"}

// stepNeeds says which earlier step each step needs.
var stepNeeds = map[string]string{"idle": "connect", "fanout": "connect", "api": "fanout", "rollout": "fanout",
	"rollback": "rollout", "restart": "connect"}

// config is the benchmark's flags.
type config struct {
	n              int
	perProcess     int
	output         string
	keep           bool
	bin            string
	settle         time.Duration // idle time before the idle measurements
	cpuWindow      time.Duration // how long the server's CPU is measured at idle
	apiRequests    int           // per endpoint
	apiConcurrency int
	unhealthy      float64 // share of agents whose exec health checks never pass
	ramp           int     // agents enrolling or connecting for the first time at once, in all sims
	profiles       bool    // save the server's CPU and heap profiles in the work dir
	timeout        time.Duration
	store          string          // sqlite or postgres
	storeURL       string          // an existing PostgreSQL's, instead of one of the run's own
	replicas       int             // server processes on the store
	steps          map[string]bool // the steps to run, of stepNames
	command        string
	logWriter      io.Writer // progress, on stderr
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return benchenv.Run("scale", args, stdout, stderr, parseFlags, func(c config) bool { return c.output == "json" },
		func(ctx context.Context, c config) (benchenv.Report, error) {
			rep, err := bench(ctx, c)
			if rep == nil {
				return nil, err // no report to print
			}
			return rep, err
		})
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench/scale [flags]\n\n"+
			"Runs a real dockfleet server (or -replicas of it on PostgreSQL) and N simulated agents (dockfleet sim)\n"+
			"on loopback and measures "+
			"connect and reconnect times, memory and CPU per idle agent, fan-out, rollouts and API latency.\n"+
			"Needs bin/dockfleet (make build). Linux only (it reads /proc).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg config
	fs.IntVar(&cfg.n, "n", 1000, "simulated agents")
	fs.IntVar(&cfg.perProcess, "per-process", defaultPerProcess, "at most this many agents in one sim process")
	fs.StringVar(&cfg.output, "o", "table", "output: table or json")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work directory: the server's and sims' data, logs and event lines (always kept on failure)")
	fs.BoolVar(&cfg.profiles, "profiles", false, "save the server's CPU profiles (30 s of each step, the idle CPU window) and a heap profile in WORKDIR/profiles; implies -keep")
	fs.StringVar(&cfg.bin, "bin", "bin/dockfleet", "the dockfleet binary to run as server and sims")
	fs.DurationVar(&cfg.settle, "settle", 10*time.Second, "idle time after all agents connected, before memory and CPU are measured")
	fs.DurationVar(&cfg.cpuWindow, "cpu-window", 30*time.Second, "how long the server's CPU is measured with idle agents")
	fs.IntVar(&cfg.apiRequests, "api-requests", 200, "requests per API endpoint measured")
	fs.IntVar(&cfg.apiConcurrency, "api-concurrency", 4, "API requests in flight at once")
	fs.Float64Var(&cfg.unhealthy, "unhealthy", 0.01, "share of agents whose exec health checks never pass, for the rollback (at least one per sim process)")
	fs.IntVar(&cfg.ramp, "ramp", 200, "agents enrolling or connecting for the first time at once, over all sim processes (each gets its share)")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "longest one step may take")
	fs.StringVar(&cfg.store, "store", "sqlite", "the servers' store: sqlite (in the server's data dir) or postgres (a PostgreSQL "+
		"started in the work dir, fsync on, unless -store-url names one)")
	fs.StringVar(&cfg.storeURL, "store-url", "", "postgres://USER:PASSWORD@HOST:PORT/DATABASE of an existing PostgreSQL, "+
		"an empty database, instead of one of the run's own (implies -store postgres)")
	fs.IntVar(&cfg.replicas, "replicas", 1, "server processes on one store (more than 1 needs -store postgres); "+
		"agents spread over them")
	steps := fs.String("steps", strings.Join(stepNames, ","), "the steps to run, comma-separated, each with the steps it needs: "+
		"connect, idle, fanout, api, rollout, rollback, restart")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q; see -h", fs.Args())
	}
	if err := cfg.parseStore(fs); err != nil {
		return cfg, err
	}
	var err error
	if cfg.steps, err = parseSteps(*steps); err != nil {
		return cfg, err
	}
	limit := benchenv.OpenFileLimit()
	switch {
	case cfg.n < 1:
		return cfg, fmt.Errorf("-n %d: want at least 1", cfg.n)
	case cfg.perProcess < 1:
		return cfg, fmt.Errorf("-per-process %d: want at least 1", cfg.perProcess)
	case cfg.output != "table" && cfg.output != "json":
		return cfg, fmt.Errorf("-o %q: want table or json", cfg.output)
	case cfg.settle < 0:
		return cfg, fmt.Errorf("-settle %s: want 0s or more", cfg.settle)
	case cfg.cpuWindow <= 0 || cfg.timeout <= 0:
		return cfg, errors.New("-cpu-window and -timeout must be more than 0s")
	case cfg.apiRequests < 1 || cfg.apiConcurrency < 1 || cfg.ramp < 1:
		return cfg, errors.New("-api-requests, -api-concurrency and -ramp must be at least 1")
	case cfg.unhealthy <= 0 || cfg.unhealthy >= 1:
		return cfg, fmt.Errorf("-unhealthy %g: want more than 0 and less than 1", cfg.unhealthy)
	case cfg.replicas < 1 || cfg.replicas > maxReplicas:
		return cfg, fmt.Errorf("-replicas %d: want 1 to %d", cfg.replicas, maxReplicas)
	case cfg.replicas > 1 && cfg.store != "postgres":
		return cfg, fmt.Errorf("-replicas %d: replicas share one store, and SQLite is one process's: add -store postgres", cfg.replicas)
	case limit > 0 && limit <= serverFileMargin:
		return cfg, fmt.Errorf("this process may open %d files (RLIMIT_NOFILE); a server needs more than %d", limit, serverFileMargin)
	case limit > 0 && cfg.replicas < replicasNeeded(cfg.n, limit):
		need := replicasNeeded(cfg.n, limit)
		if cfg.store == "postgres" {
			return cfg, fmt.Errorf("-n %d -replicas %d: a server process holds one open file per agent, and may open %d here "+
				"(RLIMIT_NOFILE; DESIGN §10), so at most %d agents each: %d agents need -replicas %d at least",
				cfg.n, cfg.replicas, limit, limit-serverFileMargin, cfg.n, need)
		}
		return cfg, fmt.Errorf("-n %d: one server process holds one open file per agent, and this process may open %d "+
			"(RLIMIT_NOFILE; DESIGN §10): at most %d agents in one server; %d agents need -replicas %d -store postgres at least",
			cfg.n, limit, limit-serverFileMargin, cfg.n, need)
	case limit > 0 && uint64(cfg.perProcess)+simFileMargin > limit:
		return cfg, fmt.Errorf("-per-process %d: a sim process may open %d files (RLIMIT_NOFILE), so at most %d agents each",
			cfg.perProcess, limit, limit-simFileMargin)
	}
	if procs := len(split(cfg.n, cfg.perProcess)); procs > maxProcesses {
		return cfg, fmt.Errorf("-per-process %d: %d agents would need %d sim processes; at most %d", cfg.perProcess, cfg.n, procs, maxProcesses)
	}
	cfg.keep = cfg.keep || cfg.profiles
	cfg.command = strings.TrimSpace("go run ./bench/scale " + strings.Join(redactArgs(args), " "))
	cfg.logWriter = stderr
	return cfg, nil
}

// parseStore checks -store and -store-url; -store-url alone means
// postgres.
func (c *config) parseStore(fs *flag.FlagSet) error {
	storeSet := false
	fs.Visit(func(f *flag.Flag) { storeSet = storeSet || f.Name == "store" })
	if c.storeURL != "" && !storeSet {
		c.store = "postgres"
	}
	switch {
	case c.store != "sqlite" && c.store != "postgres":
		return fmt.Errorf("-store %q: want sqlite or postgres", c.store)
	case c.storeURL == "":
		return nil
	case c.store != "postgres":
		return fmt.Errorf("-store-url is a PostgreSQL's: it goes with -store postgres, not %s", c.store)
	}
	u, err := url.Parse(c.storeURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		// Not the URL itself: it may hold a password.
		return errors.New("-store-url: want postgres://USER:PASSWORD@HOST:PORT/DATABASE")
	}
	return nil
}

// redactArgs is args with -store-url's password, if any, replaced by
// "xxxxx", for the report.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	redact := func(v string) string {
		u, err := url.Parse(v)
		if err != nil {
			return "REDACTED"
		}
		return u.Redacted()
	}
	for i, a := range out {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-") || name != "store-url":
		case hasValue:
			out[i] = a[:len(a)-len(value)] + redact(value)
		case i+1 < len(out):
			out[i+1] = redact(out[i+1])
		}
	}
	return out
}

// parseSteps reads -steps: known names, each with the step it needs.
func parseSteps(list string) (map[string]bool, error) {
	steps := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(stepNames, name) {
			return nil, fmt.Errorf("-steps: %q is no step; the steps are %s", name, strings.Join(stepNames, ", "))
		}
		steps[name] = true
	}
	for name := range steps {
		if need := stepNeeds[name]; need != "" && !steps[need] {
			return nil, fmt.Errorf("-steps: %s needs %s; add it", name, need)
		}
	}
	return steps, nil
}

// replicasNeeded is how many server processes n agents need at least when
// one process may open limit files: one per agent, and serverFileMargin
// besides.
func replicasNeeded(n int, limit uint64) int {
	per := int(limit - serverFileMargin)
	return (n + per - 1) / per
}

func (c config) logf(format string, a ...any) {
	fmt.Fprintf(c.logWriter, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// split divides n agents over as few processes of at most per as it can,
// evenly: 19,000 at 9,000 a process are 6,334 + 6,333 + 6,333.
func split(n, per int) []int {
	procs := (n + per - 1) / per
	out := make([]int, procs)
	for i := range out {
		out[i] = n / procs
		if i < n%procs {
			out[i]++
		}
	}
	return out
}

// sourceIPs gives each sim process loopback source addresses of its own,
// 127.0.0.2 up, one for every agentsPerSourceIP of its agents.
func sourceIPs(shares []int) [][]string {
	out := make([][]string, len(shares))
	next := 2
	for i, k := range shares {
		for range (k + agentsPerSourceIP - 1) / agentsPerSourceIP {
			out[i] = append(out[i], fmt.Sprintf("127.0.0.%d", next))
			next++
		}
	}
	return out
}

// rampShare is the --ramp of each of procs sim processes: together they
// let ramp agents enroll or connect at once.
func rampShare(ramp, procs int) int {
	return max((ramp+procs-1)/procs, 1)
}

// unhealthyShare is the --unhealthy-fraction a sim process of k agents
// gets: f, but at least one agent, so that the rollback has something to
// roll back from on small fleets too.
func unhealthyShare(k int, f float64) float64 {
	return max(f, 1/float64(k))
}

// unhealthyCount is how many of k agents a sim process makes unhealthy
// with fraction f (internal/sim: round(k × f)).
func unhealthyCount(k int, f float64) int {
	return int(f*float64(k) + 0.5)
}
