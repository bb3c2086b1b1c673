package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/pgserver"
	"github.com/dockfleet/dockfleet/internal/server"
)

// replica is one server process of the run. Its data dir, addresses and
// key file stay the same across a restart.
type replica struct {
	name      string // "server", or "server1", "server2" … of several
	dir       string
	apiAddr   string
	agentAddr string
	debugAddr string // --debug-addr: pprof on loopback
	proc      *benchenv.Process
	pid       atomic.Int64 // the process's, for the open-files sampler
	debug     *debugClient
	client    *dfclient.Client
	// rssBaseline and heapBaseline are its memory before the agents
	// connected.
	rssBaseline, heapBaseline int64
}

// pgSettings are the benchmark's own PostgreSQL's, on top of the
// defaults: a benchmark of the real thing, so durability stays on (fsync,
// synchronous_commit, full_page_writes: their defaults); shared_buffers
// of 256MB hold the whole store of 40,000 nodes (the default 128MB is
// sized for small machines); max_connections 300 leave room for 16
// replicas of 16 connections each (the store's pool) and a psql.
var pgSettings = []string{"shared_buffers=256MB", "max_connections=300"}

// pgReported are the settings the report names, read from the server:
// its own or -store-url's.
var pgReported = []string{"shared_buffers", "max_connections", "fsync", "synchronous_commit", "full_page_writes", "wal_level", "max_wal_size"}

// pgDatabase is the database made in the benchmark's own PostgreSQL.
const pgDatabase = "dockfleet"

// startStore starts the run's PostgreSQL when it has one, and describes
// the store for the report.
func (b *bencher) startStore(ctx context.Context) error {
	st := &storeInfo{Kind: b.cfg.store}
	b.rep.Store = st
	if b.cfg.store != "postgres" {
		return nil
	}
	b.storeURL = b.cfg.storeURL
	if b.storeURL == "" {
		if err := b.startPostgres(ctx); err != nil {
			return err
		}
	}
	u, err := url.Parse(b.storeURL)
	if err != nil {
		return errors.New("the store's URL does not parse") // checked by parseFlags
	}
	st.URL, st.Own = u.Redacted(), b.pg != nil
	conn, err := pgx.Connect(ctx, b.storeURL)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL at %s: %w", st.URL, err)
	}
	defer conn.Close(context.Background())
	// The replicas get the password by environment, out of the process
	// list (pgx reads PGPASSWORD when the URL has none).
	if pw, ok := u.User.Password(); ok {
		b.storeEnv = []string{"PGPASSWORD=" + pw}
		u.User = url.User(u.User.Username())
		b.storeURL = u.String()
	}
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&st.Version); err != nil {
		return fmt.Errorf("asking PostgreSQL its version: %w", err)
	}
	st.Settings = map[string]string{}
	rows, err := conn.Query(ctx, "SELECT name, current_setting(name) FROM unnest($1::text[]) AS name", pgReported)
	if err != nil {
		return fmt.Errorf("reading PostgreSQL's settings: %w", err)
	}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return fmt.Errorf("reading PostgreSQL's settings: %w", err)
		}
		st.Settings[name] = value
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading PostgreSQL's settings: %w", err)
	}
	b.cfg.logf("store: PostgreSQL %s at %s", st.Version, st.URL)
	return nil
}

// startPostgres starts PostgreSQL in the work dir, with its log in
// postgres.log, and makes the store's database.
func (b *bencher) startPostgres(ctx context.Context) error {
	// As root, PostgreSQL runs as the postgres user, which must get
	// through the work dir to its own.
	if err := os.Chmod(b.dir, 0o711); err != nil {
		return err
	}
	log, err := b.createFile("postgres.log")
	if err != nil {
		return err
	}
	pg, err := pgserver.Start(ctx, pgserver.Config{Dir: filepath.Join(b.dir, "postgres"), Settings: pgSettings, Log: log})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	b.pg = pg
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgDatabase); err != nil {
		return fmt.Errorf("creating the store's database: %w", err)
	}
	u, err := url.Parse(pg.URL)
	if err != nil {
		return err
	}
	u.Path = "/" + pgDatabase
	b.storeURL = u.String()
	b.cfg.logf("PostgreSQL %s on 127.0.0.1:%d, pid %d", pg.Version, pg.Port, pg.PID())
	return nil
}

// postgresCPU is the CPU seconds the run's PostgreSQL has used so far, or
// nil when it has none (SQLite, or -store-url's, perhaps elsewhere).
func (b *bencher) postgresCPU() (*float64, error) {
	if b.pg == nil {
		return nil, nil
	}
	s, err := benchenv.TreeCPUSeconds(b.pg.PID())
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL's CPU: %w", err)
	}
	return &s, nil
}

// newReplicas gives each replica a data dir and free loopback ports,
// before the steps: the open-files sampler reads b.replicas meanwhile.
func (b *bencher) newReplicas() error {
	for i := range b.cfg.replicas {
		r := &replica{name: "server"}
		if b.cfg.replicas > 1 {
			r.name = fmt.Sprintf("server%d", i+1)
		}
		r.dir = filepath.Join(b.dir, r.name)
		for _, a := range []*string{&r.apiAddr, &r.agentAddr, &r.debugAddr} {
			var err error
			if *a, err = benchenv.FreeAddr(); err != nil {
				return err
			}
		}
		r.debug = newDebugClient(r.debugAddr)
		b.replicas = append(b.replicas, r)
	}
	return nil
}

// startServer starts the store and the replicas: the first alone, which
// makes the key file, the CA and the admin token; then the others, with a
// copy of its key file, so that they are the same server.
func (b *bencher) startServer(ctx context.Context) error {
	if b.cfg.profiles {
		if err := os.MkdirAll(b.profileDir(), 0o755); err != nil {
			return err
		}
		b.rep.ProfilesDir = b.profileDir()
	}
	if err := b.startStore(ctx); err != nil {
		return err
	}
	first := b.replicas[0]
	if err := b.launchServer(first); err != nil {
		return err
	}
	if err := b.waitAPI(ctx, first); err != nil {
		return err
	}
	b.client = first.client
	// The admin token works.
	if _, err := b.client.ListNodes(ctx); err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	if len(b.replicas) > 1 {
		key, err := os.ReadFile(filepath.Join(first.dir, server.DefaultKeyFile))
		if err != nil {
			return fmt.Errorf("the first replica's key file: %w", err)
		}
		for _, r := range b.replicas[1:] {
			if err := os.MkdirAll(r.dir, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(r.dir, server.DefaultKeyFile), key, 0o600); err != nil {
				return err
			}
			if err := b.launchServer(r); err != nil {
				return err
			}
		}
		for _, r := range b.replicas[1:] {
			if err := b.waitAPI(ctx, r); err != nil {
				return err
			}
		}
	}
	for _, r := range b.replicas {
		b.cfg.logf("%s on %s (agents %s), pid %d", r.name, r.apiAddr, r.agentAddr, r.proc.PID())
	}
	b.cfg.logf("work dir %s", b.dir)
	return nil
}

// launchServer starts replica r on its data dir and addresses, default
// flags but for the store, a debug listener on loopback (pprof: the heap
// is read from it), the per-source limits, and with several replicas
// --max-agents; its output goes to NAME.log (appended on a restart), and
// its log lines are counted.
func (b *bencher) launchServer(r *replica) error {
	f, err := b.createFile(r.name + ".log")
	if err != nil {
		return err
	}
	// agentsPerSourceIP simulated agents share each loopback source
	// address, more than sit behind one NAT in a real fleet: the limits
	// of one source address are raised so that all its agents may enroll
	// and connect at once (two connections and two calls each), and again
	// every second. The API step sends its 3 × -api-requests requests back
	// to back from one address, as no real client does: the API's burst
	// of one address is raised to hold them. The benchmark measures the
	// server, not how it throttles one address; its other limits keep
	// their defaults.
	perSource := strconv.Itoa(2 * agentsPerSourceIP)
	args := []string{"server", "--data-dir", r.dir, "--api-addr", r.apiAddr, "--agent-addr", r.agentAddr, "--debug-addr", r.debugAddr,
		"--agent-source-burst", perSource, "--agent-source-rate", perSource, "--api-source-burst", strconv.Itoa(3*b.cfg.apiRequests + 1000)}
	if b.storeURL != "" {
		args = append(args, "--store", b.storeURL)
	}
	// A replica holds what its open files allow, and tells agents over
	// that to go to another (GoAway): while one restarts, the others may
	// not hold all of them.
	if limit := benchenv.OpenFileLimit(); len(b.replicas) > 1 && limit > serverFileMargin {
		args = append(args, "--max-agents", strconv.FormatUint(limit-serverFileMargin, 10))
	}
	// Both append to the log; stderr is the server's log.
	p, err := benchenv.StartProcess(r.name, b.cfg.bin, b.storeEnv, f, &benchenv.LineWriter{File: f, OnLine: b.serverLine}, args...)
	if err != nil {
		return err
	}
	p.LogPath = f.Name()
	r.proc = p
	r.pid.Store(int64(p.PID()))
	return nil
}

// waitAPI waits until replica r answers its health check.
func (b *bencher) waitAPI(ctx context.Context, r *replica) error {
	return b.waitFor(ctx, r.name+"'s API", 20*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if r.client == nil {
			c, err := benchenv.AdminClient(r.dir, r.apiAddr)
			if err != nil {
				return false, err.Error(), nil
			}
			r.client = c
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := r.client.Health(hctx); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}

// agentCounts counts each replica's agents by its established
// connections on its agent address: one for each connected agent.
func (b *bencher) agentCounts() ([]int, error) {
	addrs := make([]string, len(b.replicas))
	for i, r := range b.replicas {
		addrs[i] = r.agentAddr
	}
	m, err := benchenv.EstablishedTo(addrs...)
	if err != nil {
		return nil, fmt.Errorf("counting the replicas' agents: %w", err)
	}
	out := make([]int, len(addrs))
	for i, a := range addrs {
		out[i] = m[a]
	}
	return out, nil
}

// settledAgentCounts is agentCounts once the counts sum to N, or as they
// are after countSettle: an agent whose stream was just replaced holds
// two connections until the server closes the old one, and one being
// made holds none.
func (b *bencher) settledAgentCounts(ctx context.Context) ([]int, error) {
	end := time.Now().Add(countSettle)
	for {
		counts, err := b.agentCounts()
		total := 0
		for _, c := range counts {
			total += c
		}
		if err != nil || total == b.cfg.n || time.Now().After(end) {
			return counts, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// countSettle bounds settledAgentCounts' wait.
const countSettle = 10 * time.Second

// serverCPU sums the replicas' CPU seconds so far.
func (b *bencher) serverCPU() (float64, error) {
	cpu, err := b.replicaCPU()
	var sum float64
	for _, c := range cpu {
		sum += c
	}
	return sum, err
}
