package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
	"github.com/dockfleet/dockfleet/internal/api"
	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/container"
)

// fleetAgents is how many agents share the daemon, as three hosts would.
const fleetAgents = 3

// deploymentName is the benchmark's deployment.
const deploymentName = "bench-hello"

// fleetBench is dockfleet as a user runs it: the real binary as a server
// and three agents (separate processes, default flags but loopback
// addresses), all on this daemon, and a replicated deployment of N applied
// through the REST API.
//
// A phase is timed from the apply until its rollout succeeded and the N
// instances report healthy on the new revision. The benchmark follows the
// rollout by long-polling the server's events, so looking costs the server
// nothing between steps.
type fleetBench struct {
	d   *docker
	cfg config
	run int

	dir       string // data dirs, and the logs unless cfg.logDir is set
	logDir    string
	keep      bool // keep dir: a phase failed and its logs explain why
	server    *process
	agents    []*process
	client    *dfclient.Client
	nodeIDs   []string
	applied   bool
	afterSeq  int64
	rolloutID string
}

func (f *fleetBench) setup(ctx context.Context) error {
	if _, err := os.Stat(f.cfg.bin); err != nil {
		return fmt.Errorf("dockfleet binary: %w; build it with `make build` or name it with -bin", err)
	}
	dir, err := os.MkdirTemp("", "dockfleet-bench-")
	if err != nil {
		return err
	}
	f.dir, f.logDir = dir, dir
	if f.cfg.logDir != "" {
		f.logDir = filepath.Join(f.cfg.logDir, fmt.Sprintf("run-%d", f.run))
		if err := os.MkdirAll(f.logDir, 0o755); err != nil {
			return err
		}
	}
	apiAddr, err := benchenv.FreeAddr()
	if err != nil {
		return err
	}
	agentAddr, err := benchenv.FreeAddr()
	if err != nil {
		return err
	}
	serverDir := filepath.Join(dir, "server")
	f.server, err = startProcess(f.cfg.bin, filepath.Join(f.logDir, "server.log"), nil,
		"server", "--data-dir", serverDir, "--api-addr", apiAddr, "--agent-addr", agentAddr)
	if err != nil {
		return err
	}
	f.cfg.logf("dockfleet: server on %s (agents %s), logs in %s", apiAddr, agentAddr, f.logDir)

	// The server writes its CA and admin token on first start.
	err = poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if f.server.exited() {
			return false, "", fmt.Errorf("server exited: %v; its log ends:\n%s", f.server.err, benchenv.Tail(f.server.logPath, 20))
		}
		c, err := benchenv.AdminClient(serverDir, apiAddr)
		if err != nil {
			return false, err.Error(), nil
		}
		if _, err := c.ListNodes(ctx); err != nil {
			return false, err.Error(), nil
		}
		f.client = c
		return true, "", nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the server: %w", err)
	}

	tok, err := f.client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: fleetAgents, AgentLabels: []string{"role"}})
	if err != nil {
		return fmt.Errorf("creating an enrollment token: %w", err)
	}
	for i := 1; i <= fleetAgents; i++ {
		name := fmt.Sprintf("bench-%d", i)
		// The token goes by environment, out of the process list.
		p, err := startProcess(f.cfg.bin, filepath.Join(f.logDir, name+".log"), []string{"DOCKFLEET_AGENT_TOKEN=" + tok.Token},
			"agent", "--server", agentAddr, "--data-dir", filepath.Join(dir, name), "--name", name, "--labels", "role=bench")
		if err != nil {
			return err
		}
		f.agents = append(f.agents, p)
	}
	err = poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		for _, a := range f.agents {
			if a.exited() {
				return false, "", fmt.Errorf("agent exited: %v; its log ends:\n%s", a.err, benchenv.Tail(a.logPath, 20))
			}
		}
		nodes, err := f.client.ListNodes(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		f.nodeIDs = f.nodeIDs[:0]
		for _, n := range nodes {
			if n.State == api.NodeReady {
				f.nodeIDs = append(f.nodeIDs, n.ID)
			}
		}
		return len(f.nodeIDs) == fleetAgents, fmt.Sprintf("%d of %d nodes ready", len(f.nodeIDs), fleetAgents), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d agents: %w", fleetAgents, err)
	}
	return nil
}

// spec is the deployment: N replicas of image, the same health check as
// swarm's, batches of cfg.batch with as many unavailable, no minimum
// healthy time (swarm has none either).
func (f *fleetBench) spec(image string) []byte {
	check := `      http:
        path: /healthz
        port: 8080
`
	if f.cfg.check == "exec" {
		check = `      exec:
        command: ["/hello", "-check", "http://127.0.0.1:8080/healthz"]
`
	}
	return fmt.Appendf(nil, `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: %s
spec:
  mode: replicated
  replicas: %d
  container:
    image: %s
    labels:
      %s: "%s"
    healthCheck:
%s      interval: 1s
      timeout: 1s
      retries: 3
  update:
    batchSize: %d
    maxUnavailable: %d
    minHealthyTime: 0s
    order: stop-first
`, deploymentName, f.cfg.n, image, benchLabel, f.cfg.runID, check, f.cfg.batch, f.cfg.batch)
}

func (f *fleetBench) create(ctx context.Context) error { return f.rollOut(ctx, f.cfg.imageV1) }
func (f *fleetBench) update(ctx context.Context) error { return f.rollOut(ctx, f.cfg.imageV2) }

// rollOut applies the deployment with image and waits until its rollout
// succeeded and every instance is healthy on the new revision.
func (f *fleetBench) rollOut(ctx context.Context, image string) error {
	res, err := f.client.Apply(ctx, "bench.yaml", "", f.spec(image))
	if err != nil {
		return fmt.Errorf("dockfleet apply: %w", err)
	}
	f.applied = true
	if len(res.Results) != 1 || res.Results[0].Rollout == "" {
		return fmt.Errorf("dockfleet apply: want one deployment with a rollout, got %+v", res.Results)
	}
	want := res.Results[0]
	for {
		ro, err := f.client.GetRollout(ctx, api.DefaultProject, deploymentName)
		if err != nil {
			return fmt.Errorf("getting the rollout: %w", err)
		}
		if ro.ID == want.Rollout && ro.State.Final() {
			if ro.State != api.RolloutSucceeded {
				return fmt.Errorf("rollout %s to revision %d: %s: %s", ro.ID, ro.To, ro.State, ro.Message)
			}
			break
		}
		// Every rollout step is an event: wait for the next one.
		evs, err := f.client.ListEvents(ctx, api.DefaultProject, deploymentName, f.afterSeq, 10*time.Second)
		if err != nil {
			return fmt.Errorf("following events: %w", err)
		}
		for _, e := range evs {
			f.afterSeq = max(f.afterSeq, e.Seq)
		}
	}
	// A rollout succeeds when its last batch is healthy; all of them
	// should be, and the benchmark checks rather than trusts it.
	return poll(ctx, f.cfg.poll, func(ctx context.Context) (bool, string, error) {
		is, err := f.client.ListInstances(ctx, api.DefaultProject, deploymentName)
		if err != nil {
			return false, "", fmt.Errorf("listing instances: %w", err)
		}
		healthy := 0
		for _, i := range is {
			if i.Revision == want.Revision && i.State == api.InstanceHealthy {
				healthy++
			}
		}
		return len(is) == f.cfg.n && healthy == f.cfg.n,
			fmt.Sprintf("%d instances, %d healthy on revision %d", len(is), healthy, want.Revision), nil
	})
}

// keepLogs keeps the data and log directory after a failure.
func (f *fleetBench) keepLogs() { f.keep = true }

func (f *fleetBench) teardown(ctx context.Context) error {
	var errs []error
	if f.applied && f.client != nil {
		// The agents remove the containers, as a user's delete would.
		if err := f.client.DeleteDeployment(ctx, api.DefaultProject, deploymentName); err != nil && !dfclient.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting the deployment: %w", err))
		} else {
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := f.d.waitGone(wctx, f.d.runFilter()); err != nil {
				errs = append(errs, fmt.Errorf("waiting for the agents to remove the containers: %w", err))
			}
			cancel()
		}
	}
	for _, a := range f.agents {
		a.stop()
	}
	if f.server != nil {
		f.server.stop()
	}
	// Whatever the agents left behind.
	for _, id := range f.nodeIDs {
		res, err := f.d.c.ContainerList(ctx, client.ContainerListOptions{All: true,
			Filters: make(client.Filters).Add("label", container.LabelNode+"="+id)})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := f.d.removeContainers(ctx, res.Items); err != nil {
			errs = append(errs, err)
		}
	}
	if f.client != nil {
		f.client.CloseIdleConnections()
	}
	if f.dir != "" {
		if f.keep && f.cfg.logDir == "" {
			f.cfg.logf("dockfleet: kept the server's and agents' data and logs in %s", f.dir)
		} else if err := os.RemoveAll(f.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// process is a dockfleet server or agent, its output in a log file.
type process struct {
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	done    chan struct{}
	err     error
}

func startProcess(bin, logPath string, env []string, args ...string) (*process, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s %s: %w", bin, args[0], err)
	}
	p := &process{cmd: cmd, logPath: logPath, log: lf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process with SIGTERM, as a user would, and kills it if it
// is not gone within ten seconds.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
