package sim_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/sim"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// These tests run a real server (SQLite, TLS, gRPC) in this process and the
// simulator against it, as the scale tests do across two processes.

// testServer is the server of the test, with the calls the tests make.
type testServer struct{ *servertest.Fixture }

func startServer(t *testing.T) *testServer {
	t.Helper()
	return startServerOn(t, "")
}

// startServerOn starts the test server on the store engine names: "sqlite"
// (or "", the default) or "postgres" (a database of its own).
func startServerOn(t *testing.T, engine string) *testServer {
	t.Helper()
	var url string
	if engine == "postgres" {
		url = pgtest.DSN(t)
	}
	return &testServer{servertest.Start(t, func(cfg *server.Config) {
		cfg.HeartbeatInterval = 500 * time.Millisecond
		cfg.Store = url
	})}
}

func (ts *testServer) token(t *testing.T, uses int) string {
	t.Helper()
	tok, err := ts.Client.CreateToken(context.Background(), api.TokenRequest{Uses: uses, AgentLabels: []string{"role"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// decodeEvents decodes the event lines written to b so far.
func decodeEvents(t *testing.T, b *testenv.Buffer) []sim.Event {
	t.Helper()
	var out []sim.Event
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var e sim.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

type running struct {
	cancel context.CancelFunc
	done   chan error
}

// runSim starts sim.Run; the test's cleanup stops it if the test did not.
func runSim(t *testing.T, cfg sim.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- sim.Run(ctx, cfg) }()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = r.stop(t) }) })
	return r
}

func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("sim.Run did not return within 30s of its context ending")
		return nil
	}
}

// waitFor waits until cond holds, and fails at once if the simulation
// ends meanwhile.
func waitFor(t *testing.T, what string, r *running, cond func() error) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, what, func() error {
		select {
		case runErr := <-r.done:
			r.done <- runErr
			t.Fatalf("waiting for %s: sim.Run returned %v", what, runErr)
		default:
		}
		return cond()
	})
}

func (ts *testServer) readyNodes(t *testing.T, r *running, n int) []api.Node {
	t.Helper()
	var nodes []api.Node
	waitFor(t, fmt.Sprintf("%d nodes ready", n), r, func() error {
		var err error
		if nodes, err = ts.Client.ListNodes(context.Background()); err != nil {
			return err
		}
		ready := 0
		for _, nd := range nodes {
			if nd.State == api.NodeReady {
				ready++
			}
		}
		if len(nodes) != n || ready != n {
			return fmt.Errorf("%d nodes, %d ready", len(nodes), ready)
		}
		return nil
	})
	return nodes
}

func (ts *testServer) apply(t *testing.T, doc string) {
	t.Helper()
	if _, err := ts.Client.Apply(context.Background(), "sim.yaml", "", []byte(doc)); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// rollout waits for the newest rollout of web to end, and returns it.
func (ts *testServer) rollout(t *testing.T, r *running, to int64) api.Rollout {
	t.Helper()
	var ro api.Rollout
	waitFor(t, fmt.Sprintf("the rollout to revision %d to end", to), r, func() error {
		var err error
		if ro, err = ts.Client.GetRollout(context.Background(), "default", "web"); err != nil {
			return err
		}
		if ro.To != to || !ro.State.Final() {
			return fmt.Errorf("rollout to %d: %s: %s", ro.To, ro.State, ro.Message)
		}
		return nil
	})
	return ro
}

// states counts web's instances by state and lists the nodes of the
// unhealthy ones.
func (ts *testServer) states(t *testing.T) (map[api.InstanceState]int, []string) {
	t.Helper()
	is, err := ts.Client.ListInstances(context.Background(), "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	count := map[api.InstanceState]int{}
	var unhealthy []string
	for _, in := range is {
		count[in.State]++
		if in.State == api.InstanceUnhealthy {
			unhealthy = append(unhealthy, in.NodeName)
		}
	}
	slices.Sort(unhealthy)
	return count, unhealthy
}

// checkPinnedOnce checks that with no registry to resolve hello:v1 at apply,
// the server pinned revision 1 to the digest the first agent reported, that
// every instance runs it, and that it said so in one event.
func checkPinnedOnce(t *testing.T, ts *testServer) {
	t.Helper()
	ctx := context.Background()
	revs, err := ts.Client.ListRevisions(ctx, "default", "web")
	if err != nil || len(revs) != 1 || revs[0].ImageDigest == "" {
		t.Fatalf("revisions = %+v, %v; want revision 1 pinned to a digest", revs, err)
	}
	is, err := ts.Client.ListInstances(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range is {
		if in.ImageDigest != revs[0].ImageDigest {
			t.Errorf("instance %s on %s runs %q; want the pinned %s", in.ID, in.NodeName, in.ImageDigest, revs[0].ImageDigest)
		}
	}
	evs, err := ts.Client.ListEvents(ctx, "default", "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	pinned := 0
	for _, e := range evs {
		if e.Type == "image.pinned" {
			pinned++
		}
	}
	if pinned != 1 {
		t.Errorf("%d image.pinned events; want 1", pinned)
	}
}

// deployment is a global deployment on every simulated node, with an exec
// health check: the only kind a simulated container can pass.
func deployment(version, update, startPeriod string) string {
	return `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: global
  selector: {matchLabels: {role: sim}}
  container:
    image: hello:v1
    env: {VERSION: "` + version + `"}
    healthCheck:
      exec: {command: [/hello, -check]}
      interval: 100ms
      timeout: 50ms
      retries: 1
      startPeriod: ` + startPeriod + `
  update: ` + update + `
`
}

const agents = 50

func TestFleetRollsOutAndReconnects(t *testing.T) {
	ts := startServer(t)
	dataDir := t.TempDir()
	var events, progress testenv.Buffer
	cfg := sim.Config{
		Server:     ts.Server.AgentAddr(),
		Token:      ts.token(t, agents), // exactly one enrollment each
		Agents:     agents,
		DataDir:    dataDir,
		NamePrefix: "sim",
		Labels:     map[string]string{"role": "sim"},
		// Slow enough that a first probe fails: the start period covers it.
		HealthyAfter: 300 * time.Millisecond,
		SourceIPs:    []string{"127.0.0.2", "127.0.0.3"},
		Ramp:         10,
		Events:       &events,
		Progress:     &progress,
	}
	r := runSim(t, cfg)
	nodes := ts.readyNodes(t, r, agents)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
		if n.Labels["role"] != "sim" || n.Facts.DockerVersion != "fakert" {
			t.Errorf("node %s: labels %v, runtime %q; want role=sim on fakert", n.Name, n.Labels, n.Facts.DockerVersion)
		}
	}
	slices.Sort(names)
	if names[0] != "sim-1" || !slices.Contains(names, "sim-50") {
		t.Errorf("node names %v; want sim-1 to sim-50", names)
	}

	ts.apply(t, deployment("1", "{batchSize: 100%, minHealthyTime: 0s}", "5s"))
	if ro := ts.rollout(t, r, 1); ro.State != api.RolloutSucceeded {
		t.Fatalf("rollout: %s: %s; want succeeded", ro.State, ro.Message)
	}
	if count, _ := ts.states(t); count[api.InstanceHealthy] != agents {
		t.Errorf("instances by state: %v; want %d healthy", count, agents)
	}
	checkPinnedOnce(t, ts)
	waitFor(t, "every agent's desired-state event", r, func() error {
		connected, desired := 0, map[string]bool{}
		for _, e := range decodeEvents(t, &events) {
			switch e.Event {
			case "connected":
				connected++
			case "desired":
				if e.Instances == 1 && e.Generation > 0 && e.T > 0 {
					desired[e.Agent] = true
				}
			}
		}
		if connected != agents || len(desired) != agents {
			return fmt.Errorf("%d connected events, %d agents with a desired state of one instance", connected, len(desired))
		}
		return nil
	})
	if !strings.Contains(progress.String(), fmt.Sprintf("all %d agents connected in", agents)) {
		t.Errorf("progress does not say all agents connected:\n%s", progress.String())
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("sim.Run after its context ended: %v; want nil", err)
	}

	// Started again with the same data dir and no token: the nodes
	// reconnect with their identities (the token is used up anyway), and
	// their fresh runtimes run the deployment again from the desired state.
	t.Run("a restarted simulator reconnects its nodes", func(t *testing.T) {
		var again testenv.Buffer
		cfg.Token, cfg.Events, cfg.Progress = "", &again, nil
		r := runSim(t, cfg)
		waitFor(t, "every agent to reconnect", r, func() error {
			n := 0
			for _, e := range decodeEvents(t, &again) {
				if e.Event == "connected" {
					n++
				}
			}
			if n != agents {
				return fmt.Errorf("%d connected", n)
			}
			return nil
		})
		ts.readyNodes(t, r, agents)
		waitFor(t, "every instance healthy again", r, func() error {
			if count, _ := ts.states(t); count[api.InstanceHealthy] != agents {
				return fmt.Errorf("instances by state: %v", count)
			}
			return nil
		})
		if err := r.stop(t); err != nil {
			t.Errorf("sim.Run: %v", err)
		}
	})
}

// TestUnhealthyFractionRollsBack runs on both store engines: agents enroll,
// report, and roll out and back through the store.
func TestUnhealthyFractionRollsBack(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) { testUnhealthyFractionRollsBack(t, engine) })
	}
}

func testUnhealthyFractionRollsBack(t *testing.T, engine string) {
	ts := startServerOn(t, engine)
	r := runSim(t, sim.Config{
		Server:            ts.Server.AgentAddr(),
		Token:             ts.token(t, agents),
		Agents:            agents,
		DataDir:           t.TempDir(),
		NamePrefix:        "sim",
		Labels:            map[string]string{"role": "sim"},
		UnhealthyFraction: 0.1,
	})
	ts.readyNodes(t, r, agents)

	// A tenth of the instances may fail: the rollout completes, and shows
	// which nodes are unhealthy: every tenth.
	ts.apply(t, deployment("1", "{batchSize: 100%, minHealthyTime: 0s, maxFailureRatio: 0.1}", "0s"))
	if ro := ts.rollout(t, r, 1); ro.State != api.RolloutSucceeded {
		t.Fatalf("first rollout: %s: %s; want succeeded", ro.State, ro.Message)
	}
	count, unhealthy := ts.states(t)
	want := []string{"sim-10", "sim-20", "sim-30", "sim-40", "sim-50"}
	if count[api.InstanceHealthy] != agents-5 || !slices.Equal(unhealthy, want) {
		t.Errorf("instances by state: %v, unhealthy on %v; want %d healthy, unhealthy on %v", count, unhealthy, agents-5, want)
	}

	// None may fail: the next revision rolls back.
	ts.apply(t, deployment("2", "{batchSize: 100%, minHealthyTime: 0s}", "0s"))
	ro := ts.rollout(t, r, 2)
	if ro.State != api.RolloutRolledBack || ro.From != 1 {
		t.Fatalf("second rollout: %s from %d: %s; want rolled back to 1", ro.State, ro.From, ro.Message)
	}
	for _, id := range ro.FailedInstances {
		is, err := ts.Client.ListInstances(context.Background(), "default", "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range is {
			if in.ID == id && !slices.Contains(want, in.NodeName) {
				t.Errorf("instance %s on %s failed; only %v should", id, in.NodeName, want)
			}
		}
	}
	if err := r.stop(t); err != nil {
		t.Errorf("sim.Run: %v", err)
	}
}

// An enrollment refusal stops the simulation with the reason.
func TestRefusedEnrollmentEndsRun(t *testing.T) {
	ts := startServer(t)
	err := sim.Run(context.Background(), sim.Config{
		Server:     ts.Server.AgentAddr(),
		Token:      ts.token(t, 2),
		Agents:     3,
		Ramp:       1, // one at a time: the third finds the token used up
		DataDir:    t.TempDir(),
		NamePrefix: "sim",
	})
	if err == nil || !strings.Contains(err.Error(), "enrollment refused") || !strings.Contains(err.Error(), "sim-3") {
		t.Errorf("Run with a token of 2 uses for 3 agents: got %v; want sim-3's enrollment refused", err)
	}
}

func TestConfigErrors(t *testing.T) {
	base := sim.Config{Server: "127.0.0.1:1", Agents: 1, DataDir: t.TempDir()}
	tests := []struct {
		name   string
		change func(*sim.Config)
		want   string
	}{
		{"no agents", func(c *sim.Config) { c.Agents = 0 }, "at least one agent"},
		{"no server", func(c *sim.Config) { c.Server = "" }, "server"},
		{"no data dir", func(c *sim.Config) { c.DataDir = "" }, "data directory"},
		{"fraction over 1", func(c *sim.Config) { c.UnhealthyFraction = 1.5 }, "not between 0 and 1"},
		{"negative delay", func(c *sim.Config) { c.HealthyAfter = -time.Second }, "negative"},
		{"not an IP", func(c *sim.Config) { c.SourceIPs = []string{"localhost"} }, "not an IP address"},
		// 192.0.2.0/24 is TEST-NET-1, never an address of this host.
		{"not a local IP", func(c *sim.Config) { c.SourceIPs = []string{"192.0.2.1"} }, "not usable on this host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.change(&cfg)
			err := sim.Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want an error saying %q", err, tt.want)
			}
			if !errors.Is(err, sim.ErrConfig) && !errors.Is(err, sim.ErrNoAgents) {
				t.Errorf("got %v; want ErrConfig or ErrNoAgents", err)
			}
		})
	}
}

// Agents dial from their source addresses.
func TestSourceAddresses(t *testing.T) {
	token := startServer(t).token(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The listener never answers: each agent's enrollment waits in its TLS
	// handshake, rather than failing it and ending the simulation before
	// the other agent dialed.
	seen := make(chan string, 16)
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			seen <- host
		}
	}()
	defer func() {
		for len(accepted) > 0 {
			(<-accepted).Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sim.Run(ctx, sim.Config{Server: ln.Addr().String(), Token: token, Agents: 2, DataDir: t.TempDir(),
			NamePrefix: "sim", SourceIPs: []string{"127.0.0.2", "127.0.0.3"}})
	}()
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case h := <-seen:
			got[h] = true
		case <-timeout:
			t.Fatalf("dialed from %v; want 127.0.0.2 and 127.0.0.3", got)
		}
	}
	cancel()
	<-done
	if !got["127.0.0.2"] || !got["127.0.0.3"] || len(got) != 2 {
		t.Errorf("dialed from %v; want 127.0.0.2 and 127.0.0.3", got)
	}
}
