package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
	"github.com/dockfleet/dockfleet/internal/api"
	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/pgserver"
)

const (
	// deploymentName is the benchmark's one deployment: global, on every
	// node labelled nodeLabelKey=nodeLabelValue, which the sims set.
	deploymentName = "scale"
	nodeLabelKey   = "bench"
	nodeLabelValue = "scale"
	// heartbeatInterval is the server's default, which the benchmark
	// leaves as it is.
	heartbeatInterval = "5s"
)

// image is pinned by digest, so that the server resolves nothing at apply
// and no request leaves the host (DESIGN §10); the sims' in-memory runtime
// has every image. The registry named is a loopback one all the same.
var image = fmt.Sprintf("127.0.0.1:5000/dockfleet/scale@sha256:%x", sha256.Sum256([]byte("dockfleet-scale")))

// standingGaps are what no run of the benchmark can measure, or only roughly.
var standingGaps = []string{
	"the sim processes share the host's cores with the server (their CPU is reported beside the server's): " +
		"every figure but memory is slower than with the agents on other hosts.",
}

// bencher is one run: its processes, its view of the agents, its report.
type bencher struct {
	cfg config
	rep *report

	dir string
	// replicas are the server processes, one unless -replicas. client is
	// the first one's: every API call goes to it but API latency's, which
	// go to each replica in turn.
	replicas []*replica
	client   *dfclient.Client
	pg       *pgserver.Server // the run's own PostgreSQL, if it has one
	storeURL string           // the replicas' --store, without a password; "" for SQLite in the data dir
	storeEnv []string         // the replicas' environment: PGPASSWORD, if the store has one
	simDebug *debugClient     // the first sim process's, with -profiles
	// unreachable and serverErrors count lines of the replicas' logs.
	unreachable  atomic.Int64
	serverErrors atomic.Int64
	sims         []*benchenv.Process
	tr           *tracker
	afterSeq     int64 // the last event seen of the deployment

	mu    sync.Mutex
	files []*os.File
}

func newReport(ctx context.Context, cfg config) *report {
	r := &report{Command: cfg.command, N: cfg.n, Replicas: cfg.replicas, HeartbeatInterval: heartbeatInterval, Targets: designTargets,
		Gaps: slices.Clone(standingGaps), SimProcesses: []simProcess{}, Steps: []stepResult{}}
	if cfg.store == "postgres" {
		r.Gaps = append(r.Gaps, "PostgreSQL shares the host's cores and disk with the servers and the sims, "+
			"on loopback: its latency is lower, and its CPU a share of the same cores, than on a host of its own.")
	}
	r.Machine = benchenv.ReadMachine(ctx, cfg.bin)
	return r
}

// bench runs every step in order and returns the report, with what was
// measured before a failure.
func bench(ctx context.Context, cfg config) (*report, error) {
	rep := newReport(ctx, cfg)
	err := runSteps(ctx, cfg, rep)
	rep.Machine.LoadAvgEnd = benchenv.LoadAvg()
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

func runSteps(ctx context.Context, cfg config, rep *report) (err error) {
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("dockfleet binary: %w; build it with `make build` or name it with -bin", err)
	}
	dir, err := os.MkdirTemp("", "dockfleet-scale-")
	if err != nil {
		return err
	}
	b := &bencher{cfg: cfg, rep: rep, dir: dir, tr: newTracker()}
	defer func() {
		b.teardown()
		if err != nil || cfg.keep {
			cfg.logf("kept the server's and sims' data, logs and events in %s", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			cfg.logf("removing %s: %v", dir, rerr)
		}
	}()
	if err := b.newReplicas(); err != nil {
		return err
	}
	// -steps names the steps by key; the first always runs. With
	// -profiles, the steps with a profile name get a CPU profile of their
	// first stepProfile; idle profiles its CPU window, and restart the new
	// server, itself.
	steps := []struct {
		key, name, profile string
		f                  func(context.Context) error
	}{
		{"", "start the server", "", b.startServer},
		{"connect", "enroll and connect", "connect", b.connect},
		{"idle", "idle", "", b.idle},
		{"fanout", "fan-out", "fanout", b.fanout},
		{"api", "API latency", "api", b.apiLatency},
		{"rollout", "rollout in 10% batches", "rollout", b.rollout},
		{"rollback", "rollout with unhealthy agents", "rollback", b.rollback},
		{"restart", "server restart", "", b.restart},
	}
	for _, s := range steps {
		if s.key != "" && !cfg.steps[s.key] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		cfg.logf("%s", s.name)
		sctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("not done within -timeout %s", cfg.timeout))
		begin, unreachable, errs := time.Now(), b.unreachable.Load(), b.serverErrors.Load()
		maxFiles := b.sampleOpenFiles()
		profiled := func() error { return nil }
		if s.profile != "" {
			profiled = b.profile(sctx, s.profile, stepProfile)
		}
		err := s.f(sctx)
		if err != nil && sctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(sctx))
		}
		took := time.Since(begin)
		if perr := profiled(); err == nil && perr != nil {
			err = fmt.Errorf("profiling: %w", perr)
		}
		cancel()
		rep.Steps = append(rep.Steps, stepResult{Name: s.name, Seconds: took.Seconds(), MaxOpenFiles: maxFiles(),
			UnreachableMarks: int(b.unreachable.Load() - unreachable), ServerErrors: int(b.serverErrors.Load() - errs)})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// stepProfile is how much of a step -profiles profiles.
const stepProfile = 30 * time.Second

// teardown stops every process the run started: the sims first, as agents
// that lost their server would only retry.
func (b *bencher) teardown() {
	var wg sync.WaitGroup
	for _, s := range b.sims {
		wg.Go(func() { s.Stop(20 * time.Second) })
	}
	wg.Wait()
	for _, r := range b.replicas {
		if r.proc != nil {
			wg.Go(func() { r.proc.Stop(20 * time.Second) })
		}
	}
	wg.Wait()
	for _, r := range b.replicas {
		if r.client != nil {
			r.client.CloseIdleConnections()
		}
		r.debug.close()
	}
	if b.pg != nil {
		b.pg.Stop(30 * time.Second)
	}
	if b.simDebug != nil {
		b.simDebug.close()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.files {
		f.Close()
	}
}

// sampleOpenFiles counts each replica's open files every 250 ms until the
// function it returns is called, which returns the most one held.
func (b *bencher) sampleOpenFiles() func() int {
	done := make(chan struct{})
	result := make(chan int)
	go func() {
		most := 0
		sample := func() {
			for _, r := range b.replicas {
				if pid := int(r.pid.Load()); pid > 0 {
					if n, err := benchenv.OpenFiles(pid); err == nil {
						most = max(most, n)
					}
				}
			}
		}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-done:
				sample() // a step shorter than a tick gets one too
				result <- most
				return
			case <-t.C:
			}
		}
	}()
	return func() int {
		close(done)
		return <-result
	}
}

// serverLine reads one line of the server's stderr.
func (b *bencher) serverLine(line []byte) {
	switch {
	case bytes.Contains(line, []byte(`msg="node unreachable"`)):
		b.unreachable.Add(1)
	case bytes.Contains(line, []byte("level=ERROR")):
		b.serverErrors.Add(1)
	}
}

// check fails when a process ended by itself or an agent failed.
func (b *bencher) check() error {
	if b.pg != nil {
		select {
		case <-b.pg.Exited():
			return fmt.Errorf("PostgreSQL exited; its log ends:\n%s", benchenv.Tail(filepath.Join(b.dir, "postgres.log"), 20))
		default:
		}
	}
	for _, r := range b.replicas {
		if r.proc == nil {
			continue
		}
		if err := r.proc.UnexpectedExit(); err != nil {
			return fmt.Errorf("%w; its log ends:\n%s", err, benchenv.Tail(r.proc.LogPath, 20))
		}
	}
	for _, s := range b.sims {
		if err := s.UnexpectedExit(); err != nil {
			return fmt.Errorf("%w; its log ends:\n%s", err, benchenv.Tail(s.LogPath, 20))
		}
	}
	return b.tr.failure()
}

// waitFor waits for cond, as benchenv.WaitFor, while the benchmark's
// processes run.
func (b *bencher) waitFor(ctx context.Context, what string, interval time.Duration, cond func(context.Context) (bool, string, error)) error {
	return benchenv.WaitFor(ctx, what, interval, b.check, cond)
}

// sleep waits d, checking on the processes every second.
func (b *bencher) sleep(ctx context.Context, d time.Duration) error {
	end := time.Now().Add(d)
	for {
		if err := b.check(); err != nil {
			return err
		}
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(left, time.Second)):
		}
	}
}

func (b *bencher) createFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(b.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.files = append(b.files, f)
	b.mu.Unlock()
	return f, nil
}

// connect starts the sim processes and waits until every agent has
// enrolled and connected.
func (b *bencher) connect(ctx context.Context) error {
	n := b.cfg.n
	tok, err := b.client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: n, AgentLabels: []string{nodeLabelKey}})
	if err != nil {
		return fmt.Errorf("creating an enrollment token: %w", err)
	}
	shares := split(n, b.cfg.perProcess)
	ips := sourceIPs(shares)
	servers := make([]string, len(b.replicas))
	for i, r := range b.replicas {
		servers[i] = r.agentAddr
		if r.rssBaseline, err = benchenv.RSS(r.proc.PID()); err != nil {
			return err
		}
		ms, err := r.debug.memStats(ctx, true)
		if err != nil {
			return err
		}
		r.heapBaseline = ms.heapAlloc
	}

	begin := time.Now()
	for i, k := range shares {
		prefix := fmt.Sprintf("scale%d", i+1)
		frac := unhealthyShare(k, b.cfg.unhealthy)
		events, err := b.createFile(prefix + ".events.jsonl")
		if err != nil {
			return err
		}
		logf, err := b.createFile(prefix + ".log")
		if err != nil {
			return err
		}
		// Each agent starts at a random one of the servers.
		args := []string{"sim", "--server", strings.Join(servers, ","), "--agents", strconv.Itoa(k), "--data-dir", filepath.Join(b.dir, prefix),
			"--name-prefix", prefix, "--labels", nodeLabelKey + "=" + nodeLabelValue, "--source-ip", strings.Join(ips[i], ","),
			"--unhealthy-fraction", strconv.FormatFloat(frac, 'g', -1, 64), "--ramp", strconv.Itoa(rampShare(b.cfg.ramp, len(shares))),
			"--events"}
		if b.cfg.profiles && i == 0 {
			addr, err := benchenv.FreeAddr()
			if err != nil {
				return err
			}
			args = append(args, "--debug-addr", addr)
			b.simDebug = newDebugClient(addr)
		}
		// The token goes by environment, out of the process list.
		p, err := benchenv.StartProcess("sim "+prefix, b.cfg.bin, []string{"DOCKFLEET_AGENT_TOKEN=" + tok.Token},
			&benchenv.LineWriter{File: events, OnLine: b.tr.line}, logf, args...)
		if err != nil {
			return err
		}
		p.LogPath = logf.Name()
		b.sims = append(b.sims, p)
		b.rep.SimProcesses = append(b.rep.SimProcesses, simProcess{NamePrefix: prefix, Agents: k, SourceIPs: ips[i],
			UnhealthyFraction: frac, Unhealthy: unhealthyCount(k, frac)})
	}
	var times []time.Time
	err = b.waitFor(ctx, fmt.Sprintf("%d agents to connect", n), 50*time.Millisecond, func(context.Context) (bool, string, error) {
		var connected int
		times, connected = b.tr.connectedSince(begin)
		return len(times) >= n, fmt.Sprintf("%d of %d agents connected", connected, n), nil
	})
	if err != nil {
		return err
	}
	took := latest(times).Sub(begin).Seconds()
	c := &connectResult{Seconds: took, AgentsPerSecond: float64(n) / took}
	if c.NodesReady, err = b.nodesReady(ctx); err != nil {
		return err
	}
	if c.NodesReady != n {
		return fmt.Errorf("all %d agents connected, but the API lists %d of them ready", n, c.NodesReady)
	}
	b.rep.Connect = c
	b.cfg.logf("%d agents connected in %s", n, secs(took))
	return nil
}

// nodesReady counts the benchmark's nodes the API lists as ready.
func (b *bencher) nodesReady(ctx context.Context) (int, error) {
	nodes, err := b.client.ListNodes(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing nodes: %w", err)
	}
	ready := 0
	for _, nd := range nodes {
		if nd.State == api.NodeReady && nd.Labels[nodeLabelKey] == nodeLabelValue {
			ready++
		}
	}
	return ready, nil
}

// simCPU sums the sim processes' CPU seconds so far and their RSS now.
func (b *bencher) simCPU() (float64, int64, error) {
	var cpu float64
	var mem int64
	for _, s := range b.sims {
		c, err := benchenv.CPUSeconds(s.PID())
		if err != nil {
			return 0, 0, err
		}
		m, err := benchenv.RSS(s.PID())
		if err != nil {
			return 0, 0, err
		}
		cpu, mem = cpu+c, mem+m
	}
	return cpu, mem, nil
}

// idle measures the replicas with every agent connected and idle: memory
// after settle and a CPU window, CPU over the window, each replica's and
// in all, PostgreSQL's CPU beside them. With -profiles it saves a CPU
// profile of the window and a heap profile after it, of the first replica.
func (b *bencher) idle(ctx context.Context) error {
	x := &idleResult{}
	x.SettleSeconds = b.cfg.settle.Seconds()
	gcs0 := make([]int64, len(b.replicas))
	for i, r := range b.replicas {
		ms, err := r.debug.memStats(ctx, false)
		if err != nil {
			return err
		}
		gcs0[i] = ms.numGC
	}
	if err := b.sleep(ctx, b.cfg.settle); err != nil {
		return err
	}
	cpu0, err := b.replicaCPU()
	if err != nil {
		return err
	}
	pg0, err := b.postgresCPU()
	if err != nil {
		return err
	}
	sim0, _, err := b.simCPU()
	if err != nil {
		return err
	}
	w0 := time.Now()
	profiled := b.profile(ctx, "idle", b.cfg.cpuWindow)
	if err := b.sleep(ctx, b.cfg.cpuWindow); err != nil {
		return err
	}
	cpu1, err := b.replicaCPU()
	if err != nil {
		return err
	}
	pg1, err := b.postgresCPU()
	if err != nil {
		return err
	}
	sim1, simRSS, err := b.simCPU()
	if err != nil {
		return err
	}
	w1 := time.Now()
	if err := profiled(); err != nil {
		return err
	}
	window := w1.Sub(w0).Seconds()
	x.CPUWindowSeconds = window
	x.SimCPUPercent = 100 * (sim1 - sim0) / window
	x.SimRSSBytes = simRSS
	if pg0 != nil {
		p := 100 * (*pg1 - *pg0) / window
		x.PostgresCPUPercent = &p
	}
	agents, err := b.settledAgentCounts(ctx)
	if err != nil {
		return err
	}
	x.Replicas = make([]replicaIdle, len(b.replicas))
	// The sums start from the baseline, which connect took.
	total := serverIdle{}
	for i, r := range b.replicas {
		y := &x.Replicas[i]
		y.Name, y.Agents, y.RSSBaselineBytes, y.HeapBaselineBytes = r.name, agents[i], r.rssBaseline, r.heapBaseline
		y.CPUPercent = 100 * (cpu1[i] - cpu0[i]) / window
		pid := r.proc.PID()
		if y.RSSBytes, err = benchenv.RSS(pid); err != nil {
			return err
		}
		if y.OpenFiles, err = benchenv.OpenFiles(pid); err != nil {
			return err
		}
		ms, err := r.debug.memStats(ctx, true)
		if err != nil {
			return err
		}
		y.HeapLiveBytes, y.StacksBytes, y.GoSysBytes = ms.heapAlloc, ms.stackInuse, ms.sys
		// Less the one collection the second read forced (gc=1); the first
		// read (no gc) forced none.
		y.GCsIdle = int(ms.numGC - gcs0[i] - 1)
		if y.Goroutines, err = r.debug.goroutines(ctx); err != nil {
			return err
		}
		y.perAgent(y.Agents)
		x.AgentsCounted += y.Agents
		total.add(y.serverIdle, b.cfg.n)
	}
	x.serverIdle = total
	if b.cfg.profiles {
		first := b.replicas[0]
		if err := first.debug.save(ctx, "heap", 0, filepath.Join(b.profileDir(), "heap-idle.pprof")); err != nil {
			return err
		}
		if err := first.debug.save(ctx, "goroutine", 0, filepath.Join(b.profileDir(), "goroutines-idle.txt")); err != nil {
			return err
		}
	}
	if _, connected := b.tr.connectedSince(time.Time{}); connected != b.cfg.n {
		return fmt.Errorf("%d of %d agents are connected after idling; see the sims' logs", connected, b.cfg.n)
	}
	b.rep.Idle = x
	b.cfg.logf("idle: RSS %s per agent, heap %s per agent, CPU %.1f %% of one core", kib(x.RSSPerAgentBytes), kib(x.HeapPerAgentBytes), x.CPUPercent)
	if len(b.replicas) > 1 || x.PostgresCPUPercent != nil {
		for _, y := range x.Replicas {
			b.cfg.logf("  %s: %d agents, RSS %s per agent, CPU %.1f %%", y.Name, y.Agents, kib(y.RSSPerAgentBytes), y.CPUPercent)
		}
		if p := x.PostgresCPUPercent; p != nil {
			b.cfg.logf("  PostgreSQL: CPU %.1f %%", *p)
		}
	}
	return nil
}

// replicaCPU reads each replica's CPU seconds so far.
func (b *bencher) replicaCPU() ([]float64, error) {
	out := make([]float64, len(b.replicas))
	for i, r := range b.replicas {
		var err error
		if out[i], err = benchenv.CPUSeconds(r.proc.PID()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// profileDir is where -profiles writes, in the work dir.
func (b *bencher) profileDir() string { return filepath.Join(b.dir, "profiles") }

// profile starts CPU profiles of the first replica and of the first sim process
// over d, saved as cpu-<name>.pprof and cpu-<name>-sim1.pprof, when
// -profiles is set; the function it returns waits for them.
func (b *bencher) profile(ctx context.Context, name string, d time.Duration) func() error {
	if !b.cfg.profiles {
		return func() error { return nil }
	}
	errc := make(chan error, 2)
	go func() {
		errc <- b.replicas[0].debug.save(ctx, "cpu", d, filepath.Join(b.profileDir(), "cpu-"+name+".pprof"))
	}()
	go func() {
		err := error(nil)
		if b.simDebug != nil { // none before the sims start
			err = b.simDebug.save(ctx, "cpu", d, filepath.Join(b.profileDir(), "cpu-"+name+"-sim1.pprof"))
		}
		errc <- err
	}()
	return func() error { return errors.Join(<-errc, <-errc) }
}

// spec is the deployment at step (1, 2, 3 …): global on the benchmark's
// nodes, a container that changes with every step, batches of batch, and
// an exec health check if check is set (the only kind simulated
// containers can pass: nothing listens in them).
func spec(step int, batch string, check bool) []byte {
	hc := ""
	if check {
		hc = `    healthCheck:
      exec:
        command: ["/bin/true"]
      interval: 1s
      timeout: 1s
      retries: 1
`
	}
	return fmt.Appendf(nil, `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: %s
spec:
  mode: global
  selector:
    matchLabels:
      %s: %s
  container:
    image: %s
    env:
      SCALE_STEP: "%d"
%s  update:
    batchSize: %s
    maxUnavailable: %s
    minHealthyTime: 0s
    maxFailureRatio: 0
    autoRollback: true
`, deploymentName, nodeLabelKey, nodeLabelValue, image, step, hc, batch, batch)
}

// apply applies a spec and returns the rollout it started.
func (b *bencher) apply(ctx context.Context, body []byte) (api.ApplyResult, error) {
	res, err := b.client.Apply(ctx, "scale.yaml", "", body)
	if err != nil {
		return api.ApplyResult{}, fmt.Errorf("apply: %w", err)
	}
	if len(res.Results) != 1 || res.Results[0].Rollout == "" {
		return api.ApplyResult{}, fmt.Errorf("apply: want one deployment with a rollout, got %+v", res.Results)
	}
	return res.Results[0], nil
}

// waitRollout follows the deployment's events until rollout id has ended,
// and returns it and when the benchmark saw it end. Following by long
// poll costs the server nothing between steps.
func (b *bencher) waitRollout(ctx context.Context, id string) (api.Rollout, time.Time, error) {
	for {
		if err := b.check(); err != nil {
			return api.Rollout{}, time.Time{}, err
		}
		ro, err := b.client.GetRollout(ctx, api.DefaultProject, deploymentName)
		if err != nil {
			return ro, time.Time{}, fmt.Errorf("getting the rollout: %w", err)
		}
		if ro.ID == id && ro.State.Final() {
			return ro, time.Now(), nil
		}
		evs, err := b.client.ListEvents(ctx, api.DefaultProject, deploymentName, b.afterSeq, 10*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return ro, time.Time{}, fmt.Errorf("waiting for rollout %s (%s: %s): %w", id, ro.State, ro.Message, ctx.Err())
			}
			return ro, time.Time{}, fmt.Errorf("following events: %w", err)
		}
		for _, e := range evs {
			b.afterSeq = max(b.afterSeq, e.Seq)
		}
	}
}

// waitSucceeded waits for the rollout that res started to succeed and for
// every instance to run its revision; it returns the rollout and when the
// benchmark saw it end.
func (b *bencher) waitSucceeded(ctx context.Context, res api.ApplyResult) (api.Rollout, time.Time, error) {
	ro, at, err := b.waitRollout(ctx, res.Rollout)
	if err != nil {
		return ro, at, err
	}
	if ro.State != api.RolloutSucceeded {
		return ro, at, fmt.Errorf("rollout %s to revision %d: %s: %s", ro.ID, ro.To, ro.State, ro.Message)
	}
	_, _, err = b.waitInstances(ctx, res.Revision)
	return ro, at, err
}

// waitInstances waits until the deployment has one instance per agent,
// all on revision and running (none of the revisions the benchmark
// applies but the last has a health check) or healthy; it returns when it
// saw them so.
func (b *bencher) waitInstances(ctx context.Context, revision int64) ([]api.Instance, time.Time, error) {
	var is []api.Instance
	var at time.Time
	err := b.waitFor(ctx, fmt.Sprintf("every instance running on revision %d", revision), 100*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			var err error
			is, err = b.client.ListInstances(ctx, api.DefaultProject, deploymentName)
			if err != nil {
				return false, err.Error(), nil
			}
			at = time.Now()
			up := 0
			for _, i := range is {
				if i.Revision == revision && (i.State == api.InstanceRunning || i.State == api.InstanceHealthy) {
					up++
				}
			}
			return len(is) == b.cfg.n && up == b.cfg.n, fmt.Sprintf("%d instances, %d running on revision %d", len(is), up, revision), nil
		})
	return is, at, err
}

// fanout applies the global deployment, one batch of 100 %, and times each
// agent's ack of the desired state that carries its instance.
func (b *bencher) fanout(ctx context.Context) error {
	n := b.cfg.n
	serverCPU0, err := b.serverCPU()
	if err != nil {
		return err
	}
	pg0, err := b.postgresCPU()
	if err != nil {
		return err
	}
	simCPU0, _, err := b.simCPU()
	if err != nil {
		return err
	}
	begin := time.Now()
	res, err := b.apply(ctx, spec(1, "100%", false))
	if err != nil {
		return err
	}
	applied := time.Now()
	var acks []time.Time
	err = b.waitFor(ctx, "every agent's ack", 20*time.Millisecond, func(context.Context) (bool, string, error) {
		acks = b.tr.firstDesired(begin)
		return len(acks) >= n, fmt.Sprintf("%d of %d agents acked", len(acks), n), nil
	})
	if err != nil {
		return err
	}
	serverCPU1, err := b.serverCPU()
	if err != nil {
		return err
	}
	pg1, err := b.postgresCPU()
	if err != nil {
		return err
	}
	simCPU1, _, err := b.simCPU()
	if err != nil {
		return err
	}
	_, at, err := b.waitSucceeded(ctx, res)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, len(acks))
	for i, t := range acks {
		lat[i] = t.Sub(applied)
	}
	f := &fanoutResult{ApplySeconds: applied.Sub(begin).Seconds(), Ack: distribution(lat), RolloutSeconds: at.Sub(begin).Seconds(),
		ServerCPUSeconds: serverCPU1 - serverCPU0, SimCPUSeconds: simCPU1 - simCPU0}
	if pg0 != nil {
		d := *pg1 - *pg0
		f.PostgresCPUSeconds = &d
	}
	b.rep.Fanout = f
	b.cfg.logf("fan-out: ack p50 %s, p99 %s, max %s; rollout done in %s; CPU until the last ack: server %s, sims %s",
		ms(f.Ack.P50), ms(f.Ack.P99), ms(f.Ack.Max), secs(f.RolloutSeconds), secs(f.ServerCPUSeconds), secs(f.SimCPUSeconds))
	return nil
}

// apiLatency times GET /v1/nodes and describe deployment, a few at once,
// with every agent connected and an instance on each; the requests go to
// each replica in turn.
func (b *bencher) apiLatency(ctx context.Context) error {
	x := &apiResult{Concurrency: b.cfg.apiConcurrency}
	var errs atomic.Int64
	measure := func(call func(context.Context, *dfclient.Client) error) latency {
		// One call to each first, not counted: the connection is set up.
		for _, r := range b.replicas {
			if call(ctx, r.client) != nil {
				errs.Add(1)
			}
		}
		var next atomic.Int64
		var mu sync.Mutex
		var ds []time.Duration
		var wg sync.WaitGroup
		for range b.cfg.apiConcurrency {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.cfg.apiRequests) || ctx.Err() != nil {
						return
					}
					c := b.replicas[int(i)%len(b.replicas)].client
					t := time.Now()
					if err := call(ctx, c); err != nil {
						errs.Add(1)
						continue
					}
					d := time.Since(t)
					mu.Lock()
					ds = append(ds, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return distribution(ds)
	}
	x.Nodes = measure(func(ctx context.Context, c *dfclient.Client) error {
		_, err := c.ListNodes(ctx)
		return err
	})
	x.Describe = measure(func(ctx context.Context, c *dfclient.Client) error {
		if _, err := c.GetDeployment(ctx, api.DefaultProject, deploymentName); err != nil {
			return err
		}
		_, err := c.GetRollout(ctx, api.DefaultProject, deploymentName)
		return err
	})
	x.Errors = int(errs.Load())
	if err := ctx.Err(); err != nil {
		return err
	}
	b.rep.API = x
	b.cfg.logf("API: nodes p50 %s p99 %s; describe p50 %s p99 %s; %d errors", ms(x.Nodes.P50), ms(x.Nodes.P99), ms(x.Describe.P50), ms(x.Describe.P99), x.Errors)
	return b.check()
}

// rollout rolls a new revision over every agent in 10 % batches with
// instant health.
func (b *bencher) rollout(ctx context.Context) error {
	begin := time.Now()
	res, err := b.apply(ctx, spec(2, "10%", false))
	if err != nil {
		return err
	}
	ro, at, err := b.waitSucceeded(ctx, res)
	if err != nil {
		return err
	}
	b.rep.Rollout = &rolloutResult{Seconds: at.Sub(begin).Seconds(), Batches: ro.Batches, Instances: ro.Total}
	b.cfg.logf("rollout: %d batches in %s", ro.Batches, secs(at.Sub(begin).Seconds()))
	return nil
}

// rollback rolls out a revision whose exec health check the unhealthy
// agents never pass; the rollout must stop and return every instance it
// moved.
func (b *bencher) rollback(ctx context.Context) error {
	unhealthy := 0
	for _, p := range b.rep.SimProcesses {
		unhealthy += p.Unhealthy
	}
	begin := time.Now()
	res, err := b.apply(ctx, spec(3, "10%", true))
	if err != nil {
		return err
	}
	ro, stopped, err := b.waitRollout(ctx, res.Rollout)
	if err != nil {
		return err
	}
	if ro.State != api.RolloutRolledBack {
		return fmt.Errorf("rollout %s to revision %d with %d unhealthy agents ended %s, not %s: %s",
			ro.ID, ro.To, unhealthy, ro.State, api.RolloutRolledBack, ro.Message)
	}
	_, back, err := b.waitInstances(ctx, ro.From)
	if err != nil {
		return err
	}
	x := &rollbackResult{UnhealthyAgents: unhealthy, StoppedSeconds: stopped.Sub(begin).Seconds(), RolledBackSeconds: back.Sub(begin).Seconds(),
		Batches: ro.Batch, FailedInstances: len(ro.FailedInstances), State: string(ro.State), Message: ro.Message}
	b.rep.Rollback = x
	b.cfg.logf("rollback: stopped after %s, all back after %s: %s", secs(x.StoppedSeconds), secs(x.RolledBackSeconds), ro.Message)
	return nil
}

// restart stops each replica in turn (rolling) with SIGTERM, starts it
// again on the same data dir and ports, and times its agents' return,
// before the next; then it checks that no container was replaced, when
// fan-out made the deployment (-steps). With several replicas, a stopping
// one's agents move to the others (GoAway), or wait for it when the
// others are full (--max-agents).
func (b *bencher) restart(ctx context.Context) error {
	n := b.cfg.n
	containers := map[string]string{}
	if b.rep.Fanout != nil {
		d, err := b.client.GetDeployment(ctx, api.DefaultProject, deploymentName)
		if err != nil {
			return fmt.Errorf("getting the deployment: %w", err)
		}
		before, _, err := b.waitInstances(ctx, d.Deployment.StableRevision)
		if err != nil {
			return err
		}
		for _, i := range before {
			if i.ContainerID == "" {
				return fmt.Errorf("instance %s on %s has no container ID before the restart", i.ID, i.NodeName)
			}
			containers[i.ID] = i.ContainerID
		}
	}

	x := &restartResult{}
	var lat []time.Duration
	for _, r := range b.replicas {
		y, l, err := b.restartReplica(ctx, r)
		if err != nil {
			return fmt.Errorf("restarting %s: %w", r.name, err)
		}
		x.Replicas = append(x.Replicas, y)
		lat = append(lat, l...)
		x.StopSeconds = max(x.StopSeconds, y.StopSeconds)
		x.StartSeconds = max(x.StartSeconds, y.StartSeconds)
		x.OutageSeconds = max(x.OutageSeconds, y.OutageSeconds)
		x.Disconnected += y.Disconnected
	}
	x.Reconnect = distribution(lat)
	err := b.waitFor(ctx, "every node ready", 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		var err error
		x.NodesReady, err = b.nodesReady(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		return x.NodesReady == n, fmt.Sprintf("%d of %d nodes ready", x.NodesReady, n), nil
	})
	if err != nil {
		return err
	}
	if len(containers) == 0 {
		b.rep.Restart = x
		b.cfg.logf("restart: all %d back %s after the new server started; no deployment to check", n, secs(x.Reconnect.Max))
		return nil
	}
	// Give a container an agent replaced time to be reported.
	if err := b.sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	after, err := b.client.ListInstances(ctx, api.DefaultProject, deploymentName)
	if err != nil {
		return fmt.Errorf("listing instances: %w", err)
	}
	now := map[string]api.Instance{}
	for _, i := range after {
		now[i.ID] = i
	}
	x.InstancesChecked = len(containers)
	for id, c := range containers {
		i, ok := now[id]
		if !ok || i.ContainerID != c || (i.State != api.InstanceRunning && i.State != api.InstanceHealthy) {
			x.ContainersReplaced++
		}
	}
	b.rep.Restart = x
	b.cfg.logf("restart: all %d back %s after the new server started; %d containers replaced", n, secs(x.Reconnect.Max), x.ContainersReplaced)
	return nil
}

// restartReplica stops replica r, starts it again and waits until each
// agent it held has connected again, to it or to another; it returns
// each one's reconnection from the new process's start, none below zero
// (an agent that moved to another replica before it started was back
// before it).
func (b *bencher) restartReplica(ctx context.Context, r *replica) (replicaRestart, []time.Duration, error) {
	n := b.cfg.n
	// Connections, not agents, are counted: one whose stream was just
	// replaced (after the restart before this one) may be counted twice,
	// so wait for the counts to settle and never wait for more than n.
	counts, err := b.settledAgentCounts(ctx)
	if err != nil {
		return replicaRestart{}, nil, err
	}
	held := min(counts[slices.Index(b.replicas, r)], n)
	if len(b.replicas) == 1 {
		held = n // all of them, counted or not
	}
	y := replicaRestart{Name: r.name, Agents: held}
	stop := time.Now()
	y.StopSeconds = r.proc.Stop(30 * time.Second).Seconds()
	r.client.CloseIdleConnections()
	start := time.Now()
	if err := b.launchServer(r); err != nil {
		return y, nil, err
	}
	if err := b.waitAPI(ctx, r); err != nil {
		return y, nil, err
	}
	y.StartSeconds = time.Since(start).Seconds()
	profiled := func() error { return nil }
	if r == b.replicas[0] {
		profiled = b.profile(ctx, "restart", stepProfile)
	}
	var times []time.Time
	err = b.waitFor(ctx, fmt.Sprintf("%s's %d agents to reconnect", r.name, held), 50*time.Millisecond, func(context.Context) (bool, string, error) {
		var connected int
		times, connected = b.tr.connectedSince(stop)
		return len(times) >= held && connected == n, fmt.Sprintf("%d of %d agents reconnected (%d connected)", len(times), held, connected), nil
	})
	if err != nil {
		return y, nil, err
	}
	if err := profiled(); err != nil {
		return y, nil, fmt.Errorf("profiling: %w", err)
	}
	lat := make([]time.Duration, len(times))
	for i, t := range times {
		lat[i] = max(t.Sub(start), 0)
	}
	y.Reconnect = distribution(lat)
	y.OutageSeconds = latest(times).Sub(stop).Seconds()
	y.Disconnected = b.tr.disconnectsSince(stop)
	if len(b.replicas) > 1 {
		b.cfg.logf("  %s: its %d agents back %s after its new process started", r.name, held, secs(y.Reconnect.Max))
	}
	return y, lat, nil
}
