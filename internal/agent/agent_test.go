package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// These tests run a real server (SQLite, TLS, gRPC) and real agents in this
// process, with fakert in place of Docker: the protocol and the reconcile
// loop, fast. The same flows run against real Docker in tests/e2e.

type testServer struct {
	f      *servertest.Fixture
	srv    *server.Server
	client *client.Client
}

func startServer(t *testing.T, dir, apiAddr, agentAddr string) *testServer {
	return startServerConfig(t, server.Config{DataDir: dir, APIAddr: apiAddr, AgentAddr: agentAddr})
}

// startServerConfig runs a server with cfg, which names its data dir and
// both addresses, and with the fixture's resolver unless cfg has one.
func startServerConfig(t *testing.T, cfg server.Config) *testServer {
	t.Helper()
	f := servertest.Start(t, func(c *server.Config) {
		resolve := c.Resolve
		*c = cfg
		c.HeartbeatInterval = 200 * time.Millisecond
		if c.Resolve == nil {
			c.Resolve = resolve
		}
	})
	return &testServer{f: f, srv: f.Server, client: f.Client}
}

// stop stops the server; later stops return at once.
func (ts *testServer) stop() { _ = ts.f.Stop() }

// within bounds every wait for the agents and the server: a bound on a
// hang, not a speed target.
const within = 30 * time.Second

type testAgent struct {
	rt     *fakert.Runtime
	cancel context.CancelFunc
	done   chan error
	// passes counts the agent's reconcile passes, desired the desired
	// states it took from a server.
	passes, desired atomic.Uint64
	// server is the address of the server the agent is connected to, ""
	// while it is connected to none; goAways counts the sessions that
	// ended with the server telling it to move.
	server  atomic.Pointer[string]
	goAways atomic.Int64
}

// on returns the server the agent is connected to, or "".
func (ta *testAgent) on() string {
	if s := ta.server.Load(); s != nil {
		return *s
	}
	return ""
}

func startAgent(t *testing.T, ts *testServer, rt *fakert.Runtime, dir, name, token string, labels map[string]string) *testAgent {
	t.Helper()
	return startAgentClock(t, ts, rt, dir, name, token, labels, nil)
}

// startAgentClock starts an agent whose timers run on clock; nil means the
// real clock.
func startAgentClock(t *testing.T, ts *testServer, rt *fakert.Runtime, dir, name, token string, labels map[string]string, clock clockwork.Clock) *testAgent {
	t.Helper()
	return startAgentWith(t, ts, rt, dir, name, token, labels, func(c *agent.Config) { c.Clock = clock })
}

// startAgentWith starts an agent of ts whose configuration configure, if
// not nil, changes; it sets no hook the test agent sets (OnReconciled,
// OnDesired, OnConnected, OnDisconnected).
func startAgentWith(t *testing.T, ts *testServer, rt *fakert.Runtime, dir, name, token string, labels map[string]string, configure func(*agent.Config)) *testAgent {
	t.Helper()
	ta := &testAgent{rt: rt, done: make(chan error, 1)}
	cfg := agent.DefaultConfig()
	cfg.Server, cfg.Token, cfg.DataDir, cfg.Name, cfg.Labels = ts.srv.AgentAddr(), token, dir, name, labels
	cfg.Runtime = rt
	cfg.ResyncInterval, cfg.MaxBackoff = 200*time.Millisecond, 300*time.Millisecond
	if configure != nil {
		configure(&cfg)
	}
	cfg.Hooks.OnReconciled = func(uint64) { ta.passes.Add(1) }
	cfg.Hooks.OnDesired = func(uint64, int) { ta.desired.Add(1) }
	cfg.Hooks.OnConnected = func(server string) { ta.server.Store(&server) }
	cfg.Hooks.OnDisconnected = func(err error) {
		none := ""
		ta.server.Store(&none)
		if errors.Is(err, agent.ErrGoAway) {
			ta.goAways.Add(1)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() { ta.done <- a.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() { once.Do(ta.stop) })
	return ta
}

// waitPasses waits for n more reconcile passes of the agent. After two, a
// change made before the call has been seen by a whole pass: the first
// may have listed the containers before it.
func (ta *testAgent) waitPasses(t *testing.T, n uint64) {
	t.Helper()
	want := ta.passes.Load() + n
	testenv.Eventually(t, within, fmt.Sprintf("%d reconcile passes", n), func() error {
		if got := ta.passes.Load(); got < want {
			return fmt.Errorf("%d of %d passes", got-(want-n), n)
		}
		return nil
	})
}

func (ta *testAgent) stop() {
	ta.cancel()
	<-ta.done
	ta.done <- nil
}

func token(t *testing.T, ts *testServer, uses int) string {
	t.Helper()
	tok, err := ts.client.CreateToken(context.Background(), api.TokenRequest{Uses: uses, AgentLabels: []string{"role"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func running(rt *fakert.Runtime, nodeID string) []container.State {
	cs, _ := rt.List(context.Background(), nodeID)
	var out []container.State
	for _, c := range cs {
		if c.Running {
			out = append(out, c)
		}
	}
	return out
}

const spec = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: global
  selector: {matchLabels: {role: web}}
  container:
    image: hello:v1
    healthCheck:
      exec: {command: [/hello, -check]}
      interval: 100ms
      timeout: 50ms
  update: {batchSize: 100%, minHealthyTime: 0s}
`

func nodeID(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	var id string
	testenv.Eventually(t, within, "node "+name+" to enroll", func() error {
		n, err := ts.client.GetNode(context.Background(), name)
		if err != nil {
			return err
		}
		id = n.ID
		return nil
	})
	return id
}

func TestAgentRunsAndHealsDeployment(t *testing.T) {
	ts := startServer(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	rt := fakert.New()
	tok := token(t, ts, 2)
	agentA := startAgent(t, ts, rt, t.TempDir(), "a", tok, map[string]string{"role": "web"})
	startAgent(t, ts, rt, t.TempDir(), "b", tok, map[string]string{"role": "db"})
	a, b := nodeID(t, ts, "a"), nodeID(t, ts, "b")

	if _, err := ts.client.Apply(context.Background(), "web.yaml", "", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, within, "web healthy on a", func() error {
		is, err := ts.client.ListInstances(context.Background(), "default", "web")
		if err != nil {
			return err
		}
		if len(is) != 1 || is[0].NodeID != a || is[0].State != api.InstanceHealthy {
			return fmt.Errorf("instances %+v", is)
		}
		return nil
	})
	if cs := running(rt, b); len(cs) != 0 {
		t.Errorf("node b (role=db) runs %d containers; want 0", len(cs))
	}
	cs := running(rt, a)
	if len(cs) != 1 || cs[0].Labels[container.LabelDeployment] != "web" || cs[0].Labels[container.LabelNode] != a {
		t.Fatalf("node a runs %+v; want one web container labelled for a", cs)
	}

	t.Run("a container deleted by hand is recreated", func(t *testing.T) {
		old := running(rt, a)[0].ID
		if err := rt.Delete(old); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, within, "a new container", func() error {
			if cs := running(rt, a); len(cs) != 1 || cs[0].ID == old {
				return fmt.Errorf("%d running", len(cs))
			}
			return nil
		})
	})

	t.Run("a crashed container is restarted and reported", func(t *testing.T) {
		c := running(rt, a)[0]
		if err := rt.Kill(c.ID, 3); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, within, "the container to run again", func() error {
			if cs := running(rt, a); len(cs) != 1 || cs[0].ID != c.ID {
				return fmt.Errorf("%d running", len(cs))
			}
			return nil
		})
		// The server shows the restart: the same container healthy again,
		// counted once, and the agent's event in the deployment's log.
		testenv.Eventually(t, within, "the restart reported", func() error {
			is, err := ts.client.ListInstances(context.Background(), "default", "web")
			if err != nil {
				return err
			}
			if len(is) != 1 || is[0].State != api.InstanceHealthy || is[0].ContainerID != c.ID || is[0].Restarts != 1 || is[0].Reason != "" {
				return fmt.Errorf("instances %+v; want one healthy in container %s, 1 restart, no reason", is, c.ID)
			}
			evs, err := ts.client.ListEvents(context.Background(), "default", "web", 0, 0)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if strings.Contains(e.Message, "exited 3, restarted") {
					return nil
				}
			}
			return fmt.Errorf("events %+v; want one saying the container exited 3 and was restarted", evs)
		})
	})

	t.Run("failing exec health check turns the instance unhealthy", func(t *testing.T) {
		c := running(rt, a)[0]
		rt.SetExecExitCode(c.ID, 1)
		testenv.Eventually(t, within, "unhealthy", func() error {
			is, _ := ts.client.ListInstances(context.Background(), "default", "web")
			if len(is) != 1 || is[0].State != api.InstanceUnhealthy || !strings.Contains(is[0].Reason, "exit") {
				return fmt.Errorf("instances %+v", is)
			}
			return nil
		})
		rt.SetExecExitCode(c.ID, 0)
	})

	t.Run("a foreign container is never touched", func(t *testing.T) {
		rt.AddImage("nginx")
		id, err := rt.CreateUnowned(container.Config{Name: "someone-elses", Image: "nginx"})
		if err != nil {
			t.Fatal(err)
		}
		agentA.waitPasses(t, 2)
		if _, ok := rt.Config(id); !ok {
			t.Error("the agent removed a container it does not own")
		}
	})

	t.Run("relabel moves the deployment; delete removes it", func(t *testing.T) {
		if _, err := ts.client.PatchNodeLabels(context.Background(), "b", api.LabelPatch{Set: map[string]string{"role": "web"}}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, within, "web on b", func() error {
			if cs := running(rt, b); len(cs) != 1 {
				return fmt.Errorf("%d running on b", len(cs))
			}
			return nil
		})
		if err := ts.client.DeleteDeployment(context.Background(), "default", "web"); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, within, "no containers", func() error {
			if n := len(running(rt, a)) + len(running(rt, b)); n != 0 {
				return fmt.Errorf("%d running", n)
			}
			return nil
		})
	})
}

func TestAgentKeepsContainersWhileServerIsAway(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	apiAddr, agentAddr := strings.TrimPrefix(ts.srv.APIURL(), "https://"), ts.srv.AgentAddr()
	rt := fakert.New()
	agentDir := t.TempDir()
	ag := startAgent(t, ts, rt, agentDir, "a", token(t, ts, 1), map[string]string{"role": "web"})
	id := nodeID(t, ts, "a")
	if _, err := ts.client.Apply(context.Background(), "web.yaml", "", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, within, "a container", func() error {
		if cs := running(rt, id); len(cs) != 1 {
			return fmt.Errorf("%d running", len(cs))
		}
		return nil
	})
	before := running(rt, id)[0]

	ts.stop()
	// The agent restarts too while the server is away: it must rely on its cache.
	ag.stop()
	ag = startAgent(t, ts, rt, agentDir, "a", "", nil)
	ag.waitPasses(t, 2)
	if cs := running(rt, id); len(cs) != 1 || cs[0].ID != before.ID {
		t.Fatalf("with the server away the node runs %+v; want the same container %s", cs, before.ID)
	}
	rt.Delete(before.ID)
	testenv.Eventually(t, within, "healing without a server", func() error {
		if cs := running(rt, id); len(cs) != 1 {
			return fmt.Errorf("%d running", len(cs))
		}
		return nil
	})
	healed := running(rt, id)[0]

	ts2 := startServer(t, dir, apiAddr, agentAddr)
	testenv.Eventually(t, within, "node ready again", func() error {
		n, err := ts2.client.GetNode(context.Background(), "a")
		if err != nil || n.State != api.NodeReady {
			return fmt.Errorf("%v %v", n.State, err)
		}
		return nil
	})
	// Until the server's desired state is in, the agent still runs its cache.
	testenv.Eventually(t, within, "the server's desired state", func() error {
		if ag.desired.Load() == 0 {
			return errors.New("none taken")
		}
		return nil
	})
	ag.waitPasses(t, 2)
	if cs := running(rt, id); len(cs) != 1 || cs[0].ID != healed.ID {
		t.Errorf("after the server came back the node runs %+v; want the same container %s", cs, healed.ID)
	}
}

// The agent renews its certificate when its clock says it is due, and
// connects with the renewed one once the first has expired. The renewal is
// scheduled on a fake clock, moved by the test; the certificates are real,
// and TLS checks them against the real time: the first lives a few seconds
// so that its expiry shows which one the agent uses, the renewed one an
// hour so that it outlives the test.
func TestAgentRenewsItsCertificate(t *testing.T) {
	dir := t.TempDir()
	serverConfig := func(apiAddr, agentAddr string, ttl time.Duration) server.Config {
		// A short drain: the agent, told to go on its fake clock, would
		// hold its stream for the whole of a long one, and its first
		// certificate would expire meanwhile.
		return server.Config{DataDir: dir, APIAddr: apiAddr, AgentAddr: agentAddr, NodeCertTTL: ttl, DrainAgentsWithin: 100 * time.Millisecond}
	}
	ts := startServerConfig(t, serverConfig("127.0.0.1:0", "127.0.0.1:0", 3*time.Second))
	apiAddr, agentAddr := strings.TrimPrefix(ts.srv.APIURL(), "https://"), ts.srv.AgentAddr()
	agentDir := t.TempDir()
	clock := clockwork.NewFakeClock()
	startAgentClock(t, ts, fakert.New(), agentDir, "a", token(t, ts, 1), nil, clock)
	nodeID(t, ts, "a")
	var first *pki.Identity
	testenv.Eventually(t, within, "the agent to store its identity", func() error {
		var err error
		first, err = pki.LoadIdentity(agentDir)
		return err
	})
	ts.stop()
	ts = startServerConfig(t, serverConfig(apiAddr, agentAddr, time.Hour))

	// Due: a timer armed before this fires now, one armed after at once.
	clock.Advance(clock.Until(first.RenewAt()))
	var renewed *pki.Identity
	testenv.Eventually(t, within, "the certificate to be renewed", func() error {
		clock.Advance(time.Second) // the agent waits to reconnect on its clock
		var err error
		if renewed, err = pki.LoadIdentity(agentDir); err != nil {
			return err
		}
		if !renewed.NotAfter.After(first.NotAfter) {
			return fmt.Errorf("the certificate expires at %v still", renewed.NotAfter)
		}
		return nil
	})
	if renewed.NodeID != first.NodeID {
		t.Fatalf("renewed for node %s; want %s", renewed.NodeID, first.NodeID)
	}

	// Past the first certificate's expiry, a fresh connection works only
	// with the renewed one.
	testenv.Eventually(t, within, "the first certificate to expire", func() error {
		if left := time.Until(first.NotAfter); left >= 0 {
			return fmt.Errorf("%v left", left)
		}
		return nil
	})
	ts.stop()
	restarted := time.Now()
	ts = startServerConfig(t, serverConfig(apiAddr, agentAddr, time.Hour))
	testenv.Eventually(t, within, "the node to reconnect with its renewed certificate", func() error {
		clock.Advance(time.Second)
		n, err := ts.client.GetNode(context.Background(), "a")
		if err != nil {
			return err
		}
		if n.State != api.NodeReady || !n.LastSeen.After(restarted) {
			return fmt.Errorf("state %s, last seen %v; want ready, seen after the server restarted at %v", n.State, n.LastSeen, restarted)
		}
		return nil
	})
}

// A rollout waits for a node that is unreachable, says so, and finishes
// once the node is back; the node's absence is not a failure.
func TestRolloutWaitsForUnreachableNode(t *testing.T) {
	ts := startServer(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	rt := fakert.New()
	tok := token(t, ts, 3)
	dirs := map[string]string{}
	agents := map[string]*testAgent{}
	for _, n := range []string{"a", "b", "c"} {
		dirs[n] = t.TempDir()
		agents[n] = startAgent(t, ts, rt, dirs[n], n, tok, map[string]string{"role": "web"})
		nodeID(t, ts, n)
	}
	apply := func(image string) {
		t.Helper()
		y := strings.Replace(spec, "hello:v1", image, 1)
		y = strings.Replace(y, "update: {batchSize: 100%, minHealthyTime: 0s}", "update: {batchSize: 1, minHealthyTime: 0s}", 1)
		if _, err := ts.client.Apply(context.Background(), "web.yaml", "", []byte(y)); err != nil {
			t.Fatal(err)
		}
	}
	rollout := func() api.Rollout {
		ro, err := ts.client.GetRollout(context.Background(), "default", "web")
		if err != nil {
			t.Fatal(err)
		}
		return ro
	}
	apply("hello:v1")
	testenv.Eventually(t, within, "the first rollout", func() error {
		if ro := rollout(); ro.State != api.RolloutSucceeded {
			return fmt.Errorf("%s: %s", ro.State, ro.Message)
		}
		return nil
	})
	agents["c"].stop()
	testenv.Eventually(t, within, "c unreachable", func() error {
		if n, _ := ts.client.GetNode(context.Background(), "c"); n.State != api.NodeUnreachable {
			return fmt.Errorf("c is %s", n.State)
		}
		return nil
	})
	apply("hello:v2")
	testenv.Eventually(t, within, "the rollout to wait for c", func() error {
		if ro := rollout(); !strings.Contains(ro.Message, "unreachable nodes") || ro.State != api.RolloutRunning || ro.Failed != 0 {
			return fmt.Errorf("%s: %q, %d failed", ro.State, ro.Message, ro.Failed)
		}
		return nil
	})
	startAgent(t, ts, rt, dirs["c"], "c", "", nil)
	testenv.Eventually(t, within, "the rollout to finish once c is back", func() error {
		if ro := rollout(); ro.State != api.RolloutSucceeded || ro.Updated != 3 {
			return fmt.Errorf("%s: %s (%d updated)", ro.State, ro.Message, ro.Updated)
		}
		return nil
	})
}

// Review finding 10: an agent whose certificate expired while it was off
// enrolls again when given a token made for its node, and is the same node.
func TestAgentReEnrollsExpiredCertificate(t *testing.T) {
	ts := startServerConfig(t, server.Config{DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", NodeCertTTL: 2 * time.Second})
	rt := fakert.New()
	agentDir := t.TempDir()
	ag := startAgent(t, ts, rt, agentDir, "a", token(t, ts, 1), map[string]string{"role": "web"})
	id := nodeID(t, ts, "a")
	// The server knows the node as soon as it signed its certificate; the
	// agent stores it just after. Stopped in between, it would have none.
	testenv.Eventually(t, within, "the agent to store its identity", func() error {
		_, err := pki.LoadIdentity(agentDir)
		return err
	})
	ag.stop()
	testenv.Eventually(t, within, "the agent's certificate to expire", func() error {
		ident, err := pki.LoadIdentity(agentDir)
		if err != nil {
			return err
		}
		if left := time.Until(ident.NotAfter); left >= 0 {
			return fmt.Errorf("%s left", left)
		}
		return nil
	})

	tok, err := ts.client.CreateToken(context.Background(), api.TokenRequest{Node: "a", Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The agent repeats its labels, as its unit file would.
	startAgent(t, ts, rt, agentDir, "a", tok.Token, map[string]string{"role": "web"})
	testenv.Eventually(t, within, "the node to re-enroll", func() error {
		n, err := ts.client.GetNode(context.Background(), "a")
		if err != nil {
			return err
		}
		if n.ID != id || n.Epoch != 1 || n.Labels["role"] != "web" {
			return fmt.Errorf("node %+v; want ID %s, epoch 1, role=web", n, id)
		}
		return nil
	})
	testenv.Eventually(t, within, "the agent to connect with its new certificate", func() error {
		ident, err := pki.LoadIdentity(agentDir)
		if err != nil {
			return err
		}
		if ident.NodeID != id {
			return fmt.Errorf("identity of node %s; want %s", ident.NodeID, id)
		}
		if n, err := ts.client.GetNode(context.Background(), "a"); err != nil || n.State != api.NodeReady {
			return fmt.Errorf("node %s, %v; want ready", n.State, err)
		}
		return nil
	})
}
