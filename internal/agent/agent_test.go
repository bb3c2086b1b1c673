package agent_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
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

type testAgent struct {
	rt     *fakert.Runtime
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, ts *testServer, rt *fakert.Runtime, dir, name, token string, labels map[string]string) *testAgent {
	t.Helper()
	a, err := agent.New(agent.Config{Server: ts.srv.AgentAddr(), Token: token, DataDir: dir, Name: name, Labels: labels,
		Runtime: rt, ResyncInterval: 200 * time.Millisecond, MaxBackoff: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() { once.Do(ta.stop) })
	return ta
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

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	waitFor(t, "node "+name+" to enroll", func() error {
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
	startAgent(t, ts, rt, t.TempDir(), "a", tok, map[string]string{"role": "web"})
	startAgent(t, ts, rt, t.TempDir(), "b", tok, map[string]string{"role": "db"})
	a, b := nodeID(t, ts, "a"), nodeID(t, ts, "b")

	if _, err := ts.client.Apply(context.Background(), "web.yaml", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web healthy on a", func() error {
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
		waitFor(t, "a new container", func() error {
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
		waitFor(t, "the container to run again", func() error {
			if cs := running(rt, a); len(cs) != 1 || cs[0].ID != c.ID {
				return fmt.Errorf("%d running", len(cs))
			}
			return nil
		})
	})

	t.Run("failing exec health check turns the instance unhealthy", func(t *testing.T) {
		c := running(rt, a)[0]
		rt.SetExecExitCode(c.ID, 1)
		waitFor(t, "unhealthy", func() error {
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
		time.Sleep(500 * time.Millisecond) // two resync passes
		if _, ok := rt.Config(id); !ok {
			t.Error("the agent removed a container it does not own")
		}
	})

	t.Run("relabel moves the deployment; delete removes it", func(t *testing.T) {
		if _, err := ts.client.PatchNodeLabels(context.Background(), "b", api.LabelPatch{Set: map[string]string{"role": "web"}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "web on b", func() error {
			if cs := running(rt, b); len(cs) != 1 {
				return fmt.Errorf("%d running on b", len(cs))
			}
			return nil
		})
		if err := ts.client.DeleteDeployment(context.Background(), "default", "web"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "no containers", func() error {
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
	if _, err := ts.client.Apply(context.Background(), "web.yaml", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a container", func() error {
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
	time.Sleep(600 * time.Millisecond)
	if cs := running(rt, id); len(cs) != 1 || cs[0].ID != before.ID {
		t.Fatalf("with the server away the node runs %+v; want the same container %s", cs, before.ID)
	}
	rt.Delete(before.ID)
	waitFor(t, "healing without a server", func() error {
		if cs := running(rt, id); len(cs) != 1 {
			return fmt.Errorf("%d running", len(cs))
		}
		return nil
	})
	healed := running(rt, id)[0]

	ts2 := startServer(t, dir, apiAddr, agentAddr)
	waitFor(t, "node ready again", func() error {
		n, err := ts2.client.GetNode(context.Background(), "a")
		if err != nil || n.State != api.NodeReady {
			return fmt.Errorf("%v %v", n.State, err)
		}
		return nil
	})
	time.Sleep(600 * time.Millisecond)
	if cs := running(rt, id); len(cs) != 1 || cs[0].ID != healed.ID {
		t.Errorf("after the server came back the node runs %+v; want the same container %s", cs, healed.ID)
	}
}

func TestAgentRenewsItsCertificate(t *testing.T) {
	dir := t.TempDir()
	ts := startServerConfig(t, server.Config{DataDir: dir, APIAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", NodeCertTTL: 3 * time.Second})
	apiAddr, agentAddr := strings.TrimPrefix(ts.srv.APIURL(), "https://"), ts.srv.AgentAddr()
	agentDir := t.TempDir()
	startAgent(t, ts, fakert.New(), agentDir, "a", token(t, ts, 1), nil)
	nodeID(t, ts, "a")
	var first *pki.Identity
	waitFor(t, "the agent to store its identity", func() error {
		var err error
		first, err = pki.LoadIdentity(agentDir)
		return err
	})
	// Past the first certificate's expiry, a fresh connection works only
	// with a renewed certificate.
	time.Sleep(time.Until(first.NotAfter) + 500*time.Millisecond)
	renewed, err := pki.LoadIdentity(agentDir)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.NotAfter.After(first.NotAfter) || renewed.NodeID != first.NodeID {
		t.Fatalf("certificate not renewed: first expires %v, now %v (node %s → %s)", first.NotAfter, renewed.NotAfter, first.NodeID, renewed.NodeID)
	}
	ts.stop()
	ts2 := startServerConfig(t, server.Config{DataDir: dir, APIAddr: apiAddr, AgentAddr: agentAddr, NodeCertTTL: 3 * time.Second})
	waitFor(t, "the node to reconnect with its renewed certificate", func() error {
		n, err := ts2.client.GetNode(context.Background(), "a")
		if err != nil {
			return err
		}
		if n.State != api.NodeReady || time.Since(n.LastSeen) > time.Second {
			return fmt.Errorf("state %s, last seen %v", n.State, n.LastSeen)
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
		if _, err := ts.client.Apply(context.Background(), "web.yaml", []byte(y)); err != nil {
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
	waitFor(t, "the first rollout", func() error {
		if ro := rollout(); ro.State != api.RolloutSucceeded {
			return fmt.Errorf("%s: %s", ro.State, ro.Message)
		}
		return nil
	})
	agents["c"].stop()
	waitFor(t, "c unreachable", func() error {
		if n, _ := ts.client.GetNode(context.Background(), "c"); n.State != api.NodeUnreachable {
			return fmt.Errorf("c is %s", n.State)
		}
		return nil
	})
	apply("hello:v2")
	waitFor(t, "the rollout to wait for c", func() error {
		if ro := rollout(); !strings.Contains(ro.Message, "unreachable nodes") || ro.State != api.RolloutRunning || ro.Failed != 0 {
			return fmt.Errorf("%s: %q, %d failed", ro.State, ro.Message, ro.Failed)
		}
		return nil
	})
	startAgent(t, ts, rt, dirs["c"], "c", "", nil)
	waitFor(t, "the rollout to finish once c is back", func() error {
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
	waitFor(t, "the agent to store its identity", func() error {
		_, err := pki.LoadIdentity(agentDir)
		return err
	})
	ag.stop()
	waitFor(t, "the agent's certificate to expire", func() error {
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
	waitFor(t, "the node to re-enroll", func() error {
		n, err := ts.client.GetNode(context.Background(), "a")
		if err != nil {
			return err
		}
		if n.ID != id || n.Epoch != 1 || n.Labels["role"] != "web" {
			return fmt.Errorf("node %+v; want ID %s, epoch 1, role=web", n, id)
		}
		return nil
	})
	waitFor(t, "the agent to connect with its new certificate", func() error {
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
