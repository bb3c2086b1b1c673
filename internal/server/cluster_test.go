package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// fleetAgent is an in-process agent over an in-memory runtime.
type fleetAgent struct {
	name    string
	dataDir string
	rt      *fakert.Runtime
	on      func() string // the server it is connected to, "" if none
}

// freezer dials an agent's connections and can freeze them: what the
// agent writes is dropped, as on a cut link whose TCP connection the
// server still holds.
type freezer struct{ frozen atomic.Bool }

func (f *freezer) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &freezingConn{Conn: c, f: f}, nil
}

type freezingConn struct {
	net.Conn
	f *freezer
}

func (c *freezingConn) Write(p []byte) (int, error) {
	if c.f.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// startFleetAgent runs an agent that lists servers until the test ends.
func startFleetAgent(t *testing.T, name, token string, servers []string, dial *freezer) *fleetAgent {
	t.Helper()
	fa := &fleetAgent{name: name, dataDir: t.TempDir(), rt: fakert.New()}
	fa.rt.AddImage("hello:v1")
	fa.rt.AddImage("hello:v2")
	connected := make(chan string, 64)
	var current string
	cfg := agent.DefaultConfig()
	cfg.Servers, cfg.Token, cfg.DataDir, cfg.Name = servers, token, fa.dataDir, name
	cfg.Runtime, cfg.ResyncInterval, cfg.MaxBackoff = fa.rt, 200*time.Millisecond, time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Hooks.OnConnected = func(server string) { connected <- server }
	cfg.Hooks.OnDisconnected = func(error) { connected <- "" }
	if dial != nil {
		cfg.Hooks.Dialer = dial.dial
	}
	fa.on = func() string {
		for {
			select {
			case s := <-connected:
				current = s
			default:
				return current
			}
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return fa
}

// running is the env ROUND of the containers fa runs for deployment dep.
func (fa *fleetAgent) running(dep string) []string {
	id, err := pki.LoadIdentity(fa.dataDir)
	if err != nil {
		return nil // not enrolled yet
	}
	states, err := fa.rt.List(context.Background(), id.NodeID)
	if err != nil {
		return nil
	}
	var rounds []string
	for _, c := range states {
		if c.Running && c.Labels[container.LabelDeployment] == dep {
			cfg, _ := fa.rt.Config(c.ID)
			rounds = append(rounds, cfg.Env["ROUND"])
		}
	}
	return rounds
}

func webSpec(round int) string {
	return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  mode: global
  container:
    image: hello:v1
    env:
      ROUND: "%d"
  update:
    batchSize: 100%%
    minHealthyTime: 0s
`, round)
}

// TestThreeReplicasOnPostgres runs three servers on one real PostgreSQL
// with six agents spread over them: a change applied through each replica
// reaches every agent, whichever replica holds its stream and whichever
// leads; and when the leader stops, another takes over and the next change
// still reaches every agent.
func TestThreeReplicasOnPostgres(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	var reps []*servertest.Fixture
	// Heartbeats every 300 ms: a node the leader does not count as heard
	// from through the replica that holds it is unreachable within a second.
	logs := make([]*testenv.Buffer, 3)
	for i := range logs {
		logs[i] = &testenv.Buffer{}
	}
	fast := func(c *server.Config) { c.HeartbeatInterval, c.MissedHeartbeats = 300*time.Millisecond, 3 }
	first := servertest.Start(t, func(c *server.Config) {
		c.Store, c.ReplicaID, c.Logger = dsn, "r0", slog.New(slog.NewTextHandler(logs[0], nil))
		fast(c)
	})
	reps = append(reps, first)
	keyFile := filepath.Join(first.DataDir, server.DefaultKeyFile)
	for i := 1; i < 3; i++ {
		reps = append(reps, servertest.Start(t, func(c *server.Config) {
			c.Store, c.KeyFile, c.ReplicaID = dsn, keyFile, fmt.Sprintf("r%d", i)
			c.Logger = slog.New(slog.NewTextHandler(logs[i], nil))
			fast(c)
		}))
	}
	var servers []string
	for _, r := range reps {
		servers = append(servers, r.AgentAddr)
	}
	tok, err := first.Client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 6})
	if err != nil {
		t.Fatal(err)
	}
	var agents []*fleetAgent
	cut := &freezer{} // edge-1's link to r1, which does not lead
	for i := range 6 {
		// Two agents know one replica each that does not lead, so that
		// some streams are surely held away from the leader; the others
		// spread over all three.
		list := servers
		if i < 2 {
			list = servers[i+1 : i+2]
		}
		var dial *freezer
		if i == 0 {
			dial = cut
		}
		agents = append(agents, startFleetAgent(t, fmt.Sprintf("edge-%d", i+1), tok.Token, list, dial))
	}
	testenv.Eventually(t, 30*time.Second, "every agent connected", func() error {
		for _, a := range agents {
			if a.on() == "" {
				return fmt.Errorf("%s is not connected", a.name)
			}
		}
		return nil
	})

	// want waits until every agent runs web at round, and only that.
	want := func(round int) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, fmt.Sprintf("every agent running round %d", round), func() error {
			for _, a := range agents {
				if got := a.running("web"); len(got) != 1 || got[0] != fmt.Sprint(round) {
					return fmt.Errorf("%s (on %s) runs rounds %v", a.name, a.on(), got)
				}
			}
			return nil
		})
	}
	for i, r := range reps {
		if _, err := r.Client.Apply(ctx, "web.yaml", "", []byte(webSpec(i+1))); err != nil {
			t.Fatalf("apply through replica %d: %v", i, err)
		}
		want(i + 1)
	}

	// Every node is ready, whichever replica holds it.
	// Every node stays ready, whichever replica holds it: the leader
	// hears of those held elsewhere through the store. Their last-seen
	// times move on past two unreachable windows, and no replica ever
	// marked one unreachable.
	t0 := time.Now()
	testenv.Eventually(t, 15*time.Second, "every node heard from, through whichever replica", func() error {
		nodes, err := first.Client.ListNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.State != api.NodeReady || !n.LastSeen.After(t0.Add(2*time.Second)) {
				return fmt.Errorf("node %s is %s, last seen %s", n.Name, n.State, n.LastSeen)
			}
		}
		return nil
	})
	for i, l := range logs {
		if strings.Contains(l.String(), "node unreachable") {
			t.Errorf("replica %d marked a node unreachable:\n%s", i, l.String())
		}
	}
	// Every replica's API tells the same of every node: ready, with the
	// facts its agent sent to whichever replica holds it.
	testenv.Eventually(t, 15*time.Second, "every node ready with its facts, through every replica", func() error {
		for i, r := range reps {
			nodes, err := r.Client.ListNodes(ctx)
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.State != api.NodeReady || n.Facts.AgentVersion == "" || n.Facts.Hostname == "" {
					return fmt.Errorf("replica %d: node %s is %s, facts %+v", i, n.Name, n.State, n.Facts)
				}
			}
		}
		return nil
	})

	// A node cut off from the replica that holds its stream, which does not
	// lead, is marked unreachable by the leader: that replica stops
	// vouching for it once it is silent past the window, though its TCP
	// connection lingers.
	cut.frozen.Store(true)
	testenv.Eventually(t, 15*time.Second, "edge-1 unreachable through every replica", func() error {
		for i, r := range reps {
			n, err := r.Client.GetNode(ctx, "edge-1")
			if err != nil {
				return err
			}
			if n.State != api.NodeUnreachable {
				return fmt.Errorf("replica %d: edge-1 is %s", i, n.State)
			}
		}
		return nil
	})
	cut.frozen.Store(false)
	testenv.Eventually(t, 30*time.Second, "edge-1 ready again once its link is back", func() error {
		n, err := first.Client.GetNode(ctx, "edge-1")
		if err != nil {
			return err
		}
		if n.State != api.NodeReady {
			return fmt.Errorf("edge-1 is %s", n.State)
		}
		return nil
	})

	// A node revoked through one replica is cut off at the one that holds
	// its stream, and refused there from then on: edge-2 knows r2 only.
	if _, err := reps[1].Client.RevokeNode(ctx, "edge-2"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "edge-2 cut off by r2", func() error {
		if on := agents[1].on(); on != "" {
			return fmt.Errorf("edge-2 is still on %s", on)
		}
		return nil
	})
	agents = append(agents[:1], agents[2:]...) // it runs what it ran; the rounds go on without it

	// The first replica started first and leads; stopped, it hands over.
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := reps[1].Client.Apply(ctx, "web.yaml", "", []byte(webSpec(9))); err != nil {
		t.Fatal(err)
	}
	want(9)
	for i, l := range logs[1:] {
		if strings.Contains(l.String(), "node unreachable") {
			t.Errorf("replica %d marked a node unreachable when the leader changed:\n%s", i+1, l.String())
		}
	}
	if !strings.Contains(logs[1].String()+logs[2].String(), "leading") {
		t.Error("neither replica left logged that it leads")
	}
}
