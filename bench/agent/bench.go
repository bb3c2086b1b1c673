package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
	"github.com/dockfleet/dockfleet/internal/api"
	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
	"github.com/dockfleet/dockfleet/internal/pki"
)

const (
	// deploymentName is the benchmark's one deployment.
	deploymentName = "bench-agent"
	// benchLabel, with the run ID as its value, is on the agent's node
	// (the deployment selects it) and on every container, so that
	// `docker ps --filter label=dockfleet-bench` finds what a killed run
	// left. Keys starting with "dockfleet." are reserved in specs.
	benchLabel = "dockfleet-bench"
	// grace is how long a process may take to stop after SIGTERM.
	grace = 10 * time.Second
)

// bencher is one run: its processes, its clients, its report.
type bencher struct {
	cfg    config
	rep    *report
	docker *dockerrt.Client

	dir       string
	serverDir string
	agentDir  string
	apiAddr   string
	agentAddr string
	server    *benchenv.Process
	agent     *benchenv.Process
	agentLog  *agentLog
	client    *dfclient.Client
	nodeID    string
	files     []*os.File
}

func newReport(ctx context.Context, cfg config) *report {
	r := &report{Command: cfg.command, RunID: cfg.runID, N: cfg.n, Image: cfg.image, CheckInterval: cfg.interval.String(),
		GCTrace: cfg.gctrace, Targets: designTargets}
	r.Machine.Machine = benchenv.ReadMachine(ctx, cfg.bin)
	return r
}

// bench runs the benchmark and returns the report, with what was measured
// before a failure.
func bench(ctx context.Context, cfg config) (*report, error) {
	rep := newReport(ctx, cfg)
	err := measure(ctx, cfg, rep)
	rep.Machine.LoadAvgEnd = benchenv.LoadAvg()
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

func measure(ctx context.Context, cfg config, rep *report) (err error) {
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("dockfleet binary: %w; build it with `make build` or name it with -bin", err)
	}
	dc, err := dockerrt.New("")
	if err != nil {
		return err
	}
	defer dc.Close()
	if err := preflight(ctx, dc, cfg.image, rep); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "dockfleet-bench-agent-")
	if err != nil {
		return err
	}
	b := &bencher{cfg: cfg, rep: rep, docker: dc, dir: dir, serverDir: filepath.Join(dir, "server"),
		agentDir: filepath.Join(dir, "agent"), agentLog: &agentLog{}}
	defer func() {
		if terr := b.teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", terr))
		}
		if cfg.keep {
			cfg.logf("kept the server's and agent's data and logs in %s", dir)
			return
		}
		if err != nil {
			cfg.logf("removing the server's and agent's logs too; -keep keeps them")
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			cfg.logf("removing %s: %v", dir, rerr)
		}
	}()

	sctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("setup not done within -timeout %s", cfg.timeout))
	defer cancel()
	for _, step := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"start the server", b.startServer},
		{"start the agent", b.startAgent},
		{fmt.Sprintf("make %d containers healthy", cfg.n), b.deploy},
	} {
		cfg.logf("%s", step.name)
		if err := step.f(sctx); err != nil {
			if sctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("%w (%w)", err, context.Cause(sctx))
			}
			return fmt.Errorf("%s: %w", step.name, err)
		}
	}
	cfg.logf("idle: settle %s, then measure for %s", cfg.settle, cfg.window)
	if err := b.idle(ctx); err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	return nil
}

// preflight checks that the daemon answers and has the image, and notes
// its version.
func preflight(ctx context.Context, dc *dockerrt.Client, image string, rep *report) error {
	if err := dc.Ping(ctx); err != nil {
		return fmt.Errorf("docker daemon: %w", err)
	}
	ok, err := dc.HasImage(ctx, image)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("image %s: not on this daemon; build it with `make images`", image)
	}
	info, err := dc.Info(ctx)
	if err != nil {
		return err
	}
	rep.Machine.Docker = info.RuntimeVersion
	return nil
}

func (b *bencher) createFile(name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(b.dir, name))
	if err != nil {
		return nil, err
	}
	b.files = append(b.files, f)
	return f, nil
}

// check fails when the server or the agent ended by itself.
func (b *bencher) check() error {
	for _, p := range []*benchenv.Process{b.server, b.agent} {
		if p == nil {
			continue
		}
		if err := p.UnexpectedExit(); err != nil {
			return fmt.Errorf("%w; its log ends:\n%s", err, benchenv.Tail(p.LogPath, 20))
		}
	}
	return nil
}

// waitFor waits for cond, as benchenv.WaitFor, while the benchmark's
// processes run.
func (b *bencher) waitFor(ctx context.Context, what string, interval time.Duration, cond func(context.Context) (bool, string, error)) error {
	return benchenv.WaitFor(ctx, what, interval, b.check, cond)
}

// startServer starts the server on a fresh data dir and loopback ports,
// default flags, and waits until its API answers.
func (b *bencher) startServer(ctx context.Context) error {
	var err error
	if b.apiAddr, err = benchenv.FreeAddr(); err != nil {
		return err
	}
	if b.agentAddr, err = benchenv.FreeAddr(); err != nil {
		return err
	}
	f, err := b.createFile("server.log")
	if err != nil {
		return err
	}
	b.server, err = benchenv.StartProcess("server", b.cfg.bin, nil, f, f,
		"server", "--data-dir", b.serverDir, "--api-addr", b.apiAddr, "--agent-addr", b.agentAddr)
	if err != nil {
		return err
	}
	b.server.LogPath = f.Name()
	return b.waitFor(ctx, "the server's API", 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if b.client == nil {
			c, err := benchenv.AdminClient(b.serverDir, b.apiAddr)
			if err != nil {
				return false, err.Error(), nil
			}
			b.client = c
		}
		if err := b.client.Health(ctx); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}

// startAgent enrolls one agent with default flags and waits until the
// server lists its node ready.
func (b *bencher) startAgent(ctx context.Context) error {
	tok, err := b.client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 1, AgentLabels: []string{benchLabel}})
	if err != nil {
		return fmt.Errorf("creating an enrollment token: %w", err)
	}
	f, err := b.createFile("agent.log")
	if err != nil {
		return err
	}
	// The token goes by environment, out of the process list.
	env := []string{"DOCKFLEET_AGENT_TOKEN=" + tok.Token}
	if b.cfg.gctrace {
		env = append(env, "GODEBUG=gctrace=1")
	}
	name := "bench-agent-" + b.cfg.runID
	begin := time.Now()
	b.agent, err = benchenv.StartProcess("agent", b.cfg.bin, env, f, &benchenv.LineWriter{File: f, OnLine: b.agentLog.line},
		"agent", "--server", b.agentAddr, "--data-dir", b.agentDir, "--name", name, "--labels", benchLabel+"="+b.cfg.runID)
	if err != nil {
		return err
	}
	b.agent.LogPath = f.Name()
	err = b.waitFor(ctx, "the agent's node", 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		nodes, err := b.client.ListNodes(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, n := range nodes {
			if n.Name == name && n.State == api.NodeReady {
				b.nodeID = n.ID
				return true, "", nil
			}
		}
		return false, "node " + name + " not ready", nil
	})
	if err != nil {
		return err
	}
	b.rep.Setup.EnrollSeconds = time.Since(begin).Seconds()
	if b.rep.Setup.ConnectedRSSBytes, err = benchenv.RSS(b.agent.PID()); err != nil {
		return err
	}
	b.cfg.logf("agent %s (pid %d) enrolled as node %s in %.2f s", name, b.agent.PID(), b.nodeID, b.rep.Setup.EnrollSeconds)
	return nil
}

// spec is the deployment: n replicas on the agent's node, each with an
// HTTP check as examples/hello has, all started at once.
func (b *bencher) spec() []byte {
	return fmt.Appendf(nil, `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: %s
spec:
  mode: replicated
  replicas: %d
  selector:
    matchLabels:
      %s: "%s"
  container:
    image: %s
    labels:
      %s: "%s"
    healthCheck:
      http:
        path: /healthz
        port: 8080
      interval: %s
  update:
    batchSize: 100%%
    minHealthyTime: 0s
`, deploymentName, b.cfg.n, benchLabel, b.cfg.runID, b.cfg.image, benchLabel, b.cfg.runID, b.cfg.interval)
}

// healthy counts the deployment's instances, and those healthy on revision.
func (b *bencher) healthy(ctx context.Context, revision int64) (all, healthy int, err error) {
	is, err := b.client.ListInstances(ctx, api.DefaultProject, deploymentName)
	if err != nil {
		return 0, 0, fmt.Errorf("listing instances: %w", err)
	}
	for _, i := range is {
		if i.Revision == revision && i.State == api.InstanceHealthy && i.NodeID == b.nodeID {
			healthy++
		}
	}
	return len(is), healthy, nil
}

// deploy applies the deployment and waits until all n are healthy.
func (b *bencher) deploy(ctx context.Context) error {
	begin := time.Now()
	res, err := b.client.Apply(ctx, deploymentName+".yaml", "", b.spec())
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if len(res.Results) != 1 {
		return fmt.Errorf("apply: want one deployment, got %+v", res.Results)
	}
	rev := res.Results[0].Revision
	b.rep.Setup.Revision = rev
	err = b.waitFor(ctx, "every container healthy", 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		all, healthy, err := b.healthy(ctx, rev)
		if err != nil {
			return false, err.Error(), nil
		}
		return all == b.cfg.n && healthy == b.cfg.n, fmt.Sprintf("%d instances, %d healthy on revision %d", all, healthy, rev), nil
	})
	if err != nil {
		return err
	}
	b.rep.Setup.HealthySeconds = time.Since(begin).Seconds()
	b.cfg.logf("%d containers healthy %.2f s after the apply", b.cfg.n, b.rep.Setup.HealthySeconds)
	return nil
}

// idle lets the agent settle, then measures it over the window: CPU
// from start to end, resident memory every second and at the end.
func (b *bencher) idle(ctx context.Context) error {
	if err := b.sleep(ctx, b.cfg.settle, nil); err != nil {
		return err
	}
	// The server's CPU and dockerd's are context: the agent's probes and
	// resyncs cost the daemon too (dockerd's includes whatever else runs
	// on it).
	pids := map[string]int{"agent": b.agent.PID(), "server": b.server.PID(), "dockerd": findProcess("dockerd")}
	cpu0 := map[string]float64{}
	for who, pid := range pids {
		if pid == 0 {
			continue
		}
		c, err := benchenv.CPUSeconds(pid)
		if err != nil {
			return fmt.Errorf("%s's CPU: %w", who, err)
		}
		cpu0[who] = c
	}
	states0, gc0 := b.agentLog.snapshot()
	begin := time.Now()
	var rssMax int64
	sample := func() error {
		rss, err := benchenv.RSS(b.agent.PID())
		rssMax = max(rssMax, rss)
		return err
	}
	if err := b.sleep(ctx, b.cfg.window, sample); err != nil {
		return err
	}
	window := time.Since(begin).Seconds()
	cpu := map[string]float64{}
	for who, c0 := range cpu0 {
		c, err := benchenv.CPUSeconds(pids[who])
		if err != nil {
			return fmt.Errorf("%s's CPU: %w", who, err)
		}
		cpu[who] = 100 * (c - c0) / window
	}
	st, err := benchenv.Status(b.agent.PID(), "VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")
	if err != nil {
		return err
	}
	files, err := benchenv.OpenFiles(b.agent.PID())
	if err != nil {
		return err
	}
	states1, gc1 := b.agentLog.snapshot()
	x := &idleResult{SettleSeconds: b.cfg.settle.Seconds(), WindowSeconds: window,
		CPUPercent: cpu["agent"], ServerCPUPercent: cpu["server"], DockerdCPUPercent: cpu["dockerd"], DockerdFound: pids["dockerd"] != 0,
		RSSBytes: st["VmRSS"], RSSMaxBytes: max(rssMax, st["VmRSS"]), HWMBytes: st["VmHWM"], RSSAnonBytes: st["RssAnon"], RSSFileBytes: st["RssFile"],
		Threads: int(st["Threads"]), OpenFiles: files, StateChanges: states1 - states0}
	if b.cfg.gctrace && gc1.n > 0 {
		x.GC = &gcResult{InWindow: gc1.n - gc0.n, LastHeapLiveBytes: gc1.live, LastHeapGoalBytes: gc1.goal,
			LastStacksBytes: gc1.stacks, LastGlobalsBytes: gc1.globals, Total: gc1.n}
	}
	all, healthy, err := b.healthy(ctx, b.rep.Setup.Revision)
	if err != nil {
		return err
	}
	x.HealthyAtEnd = healthy
	if all != b.cfg.n || healthy != b.cfg.n {
		return fmt.Errorf("after the window %d of %d instances are healthy (%d in all); the agent's log ends:\n%s",
			healthy, b.cfg.n, all, benchenv.Tail(b.agent.LogPath, 20))
	}
	b.rep.Idle = x
	b.cfg.logf("idle agent: RSS %s (HWM %s), CPU %.2f %% of one core over %.0f s", mib(x.RSSBytes), mib(x.HWMBytes), x.CPUPercent, window)
	return nil
}

// sleep waits d, checking on the processes, and calling each (if not nil),
// every second.
func (b *bencher) sleep(ctx context.Context, d time.Duration, each func() error) error {
	end := time.Now().Add(d)
	for {
		if err := b.check(); err != nil {
			return err
		}
		if each != nil {
			if err := each(); err != nil {
				return err
			}
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

// teardown stops the agent (so it makes nothing more) and the server, and
// removes every container of the agent's node; it runs after Ctrl-C too.
func (b *bencher) teardown() error {
	var errs []error
	if b.agent != nil {
		b.agent.Stop(grace)
	}
	if b.server != nil {
		b.server.Stop(grace)
	}
	if b.client != nil {
		b.client.CloseIdleConnections()
	}
	for _, f := range b.files {
		f.Close()
	}
	nodeID := b.nodeID
	if nodeID == "" {
		// The agent may have enrolled before the run stopped waiting.
		if id, err := pki.LoadIdentity(b.agentDir); err == nil {
			nodeID = id.NodeID
		}
	}
	if nodeID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := b.docker.List(ctx, nodeID)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		sem = make(chan struct{}, 8)
	)
	for _, c := range cs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := b.docker.Remove(ctx, nodeID, c.ID); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if left, err := b.docker.List(ctx, nodeID); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("%d containers of node %s left (%v); docker ps -a --filter label=%s=%s", len(left), nodeID, err, benchLabel, b.cfg.runID))
	}
	if len(cs) > 0 {
		b.cfg.logf("removed %d containers", len(cs))
	}
	return errors.Join(errs...)
}

// agentLog follows the agent's log: the instance state changes it logs,
// and with gctrace the runtime's line for each collection.
type agentLog struct {
	mu     sync.Mutex
	states int
	gc     gcLine
}

// gcLine is what the benchmark reads of a gctrace line; sizes in bytes.
type gcLine struct {
	n                           int
	live, goal, stacks, globals int64
}

// gcTrace matches the runtime's line (runtime/mgc.go): "gc 7 @12.3s 0%:
// … ms cpu, 3->3->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P". Its
// "MB" are MiB, rounded down.
var gcTrace = regexp.MustCompile(`gc (\d+) @.* \d+->\d+->(\d+) MB, (\d+) MB goal, (\d+) MB stacks, (\d+) MB globals`)

func (l *agentLog) line(b []byte) {
	var g gcLine
	m := gcTrace.FindSubmatch(b)
	if m != nil {
		g.n, _ = strconv.Atoi(string(m[1]))
		for i, p := range []*int64{&g.live, &g.goal, &g.stacks, &g.globals} {
			v, _ := strconv.ParseInt(string(m[i+2]), 10, 64)
			*p = v << 20
		}
	}
	state := bytes.Contains(b, []byte(`msg="instance state"`))
	l.mu.Lock()
	defer l.mu.Unlock()
	if m != nil {
		l.gc = g
	}
	if state {
		l.states++
	}
}

// snapshot returns the state changes logged so far and the last collection.
func (l *agentLog) snapshot() (int, gcLine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.states, l.gc
}

// findProcess returns the PID of the first process named comm, 0 if none
// (or no /proc to look in).
func findProcess(comm string) int {
	es, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range es {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.TrimSpace(string(b)) == comm {
			return pid
		}
	}
	return 0
}
