package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// These tests run two real servers in this process, replicas of one fleet,
// with real agents that list both.
//
// Scaffolding until replicas on PostgreSQL land: the second server shares
// the first's SQLite file and key file (so its sealed CA), so that a node enrolled at one is known at the other and its certificate is
// good at both; each has its own server certificate from that CA. Both run
// their controllers and neither learns of the other's changes, so these
// tests keep to where agents connect and how they move, and put a
// deployment only where one server made all of it before the other
// started.

// replicaConfig is the configuration of a server in dir, with drain and
// logs for these tests; agentAddr "" picks a free port.
func replicaConfig(dir, agentAddr string, log *slog.Logger) server.Config {
	if agentAddr == "" {
		agentAddr = "127.0.0.1:0"
	}
	return server.Config{DataDir: dir, APIAddr: "127.0.0.1:0", AgentAddr: agentAddr, DrainAgentsWithin: 2 * time.Second, Logger: log}
}

// startReplica starts, with cfg, a server that shares first's store and
// key file, and so its CA; cfg.DataDir is set to a new directory.
func startReplica(t *testing.T, first *testServer, cfg server.Config) *testServer {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.Store = "sqlite:" + filepath.Join(first.f.DataDir, "dockfleet.db")
	cfg.KeyFile = filepath.Join(first.f.DataDir, server.DefaultKeyFile)
	return startServerConfig(t, cfg)
}

// cutter dials the servers for the agents, and cuts them off from a server
// as a kill -9 would: it closes their connections to it, and refuses new
// ones until the server is revived. (An in-process server cannot be
// killed, and a stopped one drains its agents first.)
type cutter struct {
	mu    sync.Mutex
	cut   map[string]bool
	conns map[string][]net.Conn
}

func newCutter() *cutter { return &cutter{cut: map[string]bool{}, conns: map[string][]net.Conn{}} }

func (c *cutter) dial(ctx context.Context, addr string) (net.Conn, error) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	c.mu.Lock()
	cut := c.cut[addr]
	c.mu.Unlock()
	if cut {
		return nil, refused
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut[addr] {
		conn.Close()
		return nil, refused
	}
	c.conns[addr] = append(c.conns[addr], conn)
	return conn, nil
}

func (c *cutter) kill(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut[addr] = true
	for _, conn := range c.conns[addr] {
		conn.Close()
	}
	delete(c.conns, addr)
}

func (c *cutter) revive(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cut, addr)
}

// startRoamers starts n agents named prefix-1 to prefix-n that list
// servers, dialing through c, and waits until each is connected.
func startRoamers(t *testing.T, ts *testServer, c *cutter, n int, prefix string, servers ...string) []*testAgent {
	t.Helper()
	tok := token(t, ts, n)
	agents := make([]*testAgent, n)
	for i := range agents {
		agents[i] = startAgentWith(t, ts, fakert.New(), t.TempDir(), fmt.Sprintf("%s-%d", prefix, i+1), tok, map[string]string{"role": "web"},
			func(cfg *agent.Config) {
				cfg.Server, cfg.Servers = "", servers
				cfg.Hooks.Dialer = c.dial
			})
	}
	waitOn(t, agents, "every agent to connect", servers...)
	return agents
}

// waitOn waits until every agent is connected to one of servers.
func waitOn(t *testing.T, agents []*testAgent, what string, servers ...string) {
	t.Helper()
	testenv.Eventually(t, within, what, func() error {
		for i, ta := range agents {
			if on := ta.on(); !contains(servers, on) {
				return fmt.Errorf("agent %d is on %q; want one of %v", i+1, on, servers)
			}
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// count is how many of agents are connected to server.
func count(agents []*testAgent, server string) int {
	n := 0
	for _, ta := range agents {
		if ta.on() == server {
			n++
		}
	}
	return n
}

// Agents that list two servers spread over both; when one is killed, its
// agents reach the other; when one stops gracefully, it tells its agents
// to go (GoAway) and they move to the other.
func TestAgentsSpreadOverServersAndMove(t *testing.T) {
	var logA, logB testenv.Buffer
	a := startServerConfig(t, replicaConfig(t.TempDir(), "", slog.New(slog.NewTextHandler(&logA, nil))))
	b := startReplica(t, a, replicaConfig("", "", slog.New(slog.NewTextHandler(&logB, nil))))
	addrA, addrB := a.srv.AgentAddr(), b.srv.AgentAddr()
	c := newCutter()
	// 16 agents: all on one server by chance once in 32,768 runs.
	agents := startRoamers(t, a, c, 16, "roamer", addrA, addrB)
	if na, nb := count(agents, addrA), count(agents, addrB); na == 0 || nb == 0 {
		t.Fatalf("%d agents on the first server, %d on the second; want both to have some", na, nb)
	}

	t.Run("a killed server's agents reach the other", func(t *testing.T) {
		moving := count(agents, addrA)
		start := time.Now()
		c.kill(addrA)
		waitOn(t, agents, "every agent on the second server", addrB)
		t.Logf("%d agents of the killed server moved in %s", moving, time.Since(start).Round(time.Millisecond))
		c.revive(addrA)
	})

	t.Run("a server that stops tells its agents to move", func(t *testing.T) {
		before := make([]int64, len(agents))
		for i, ta := range agents {
			before[i] = ta.goAways.Load()
		}
		start := time.Now()
		b.stop()
		waitOn(t, agents, "every agent on the first server", addrA)
		t.Logf("%d agents of the stopped server moved in %s", len(agents), time.Since(start).Round(time.Millisecond))
		for i, ta := range agents {
			if got := ta.goAways.Load() - before[i]; got != 1 {
				t.Errorf("agent %d was told to move %d times; want once", i+1, got)
			}
		}
		for _, want := range []string{"draining agents", "agents=16", "agents drained"} {
			if !strings.Contains(logB.String(), want) {
				t.Errorf("the stopped server's log does not say %q:\n%s", want, logB.String())
			}
		}
		if n := strings.Count(logB.String(), `msg="agent disconnected"`); n != 0 {
			t.Errorf("the stopped server logged %d agents one by one at info level; want their count only", n)
		}
	})
}

// An agent that moves from one server to another, told to by the first as
// it stops, keeps its containers: none restarted or recreated.
func TestMoveKeepsContainers(t *testing.T) {
	a := startServerConfig(t, replicaConfig(t.TempDir(), "", nil))
	addrA, addrB := a.srv.AgentAddr(), testenv.FreeAddr(t)
	c := newCutter()
	// The second server is not up yet: every agent lands on the first.
	agents := startRoamers(t, a, c, 3, "keeper", addrA, addrB)
	if _, err := a.client.Apply(context.Background(), "web.yaml", "", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, within, "web healthy on every node", func() error {
		is, err := a.client.ListInstances(context.Background(), "default", "web")
		if err != nil {
			return err
		}
		healthy := 0
		for _, i := range is {
			if i.State == api.InstanceHealthy {
				healthy++
			}
		}
		if healthy != len(agents) {
			return fmt.Errorf("%d of %d healthy: %+v", healthy, len(agents), is)
		}
		return nil
	})
	before := make([]container.State, len(agents))
	ids := make([]string, len(agents))
	for i, ta := range agents {
		ids[i] = nodeID(t, a, fmt.Sprintf("keeper-%d", i+1))
		cs, _ := ta.rt.List(context.Background(), ids[i])
		if len(cs) != 1 || !cs[0].Running {
			t.Fatalf("agent %d runs %+v; want one container", i+1, cs)
		}
		before[i] = cs[0]
	}

	// The second server loads the deployment the first made.
	startReplica(t, a, replicaConfig("", addrB, nil))
	desired := make([]uint64, len(agents))
	for i, ta := range agents {
		desired[i] = ta.desired.Load()
	}
	a.stop()
	waitOn(t, agents, "every agent on the second server", addrB)
	testenv.Eventually(t, within, "a desired state from the second server", func() error {
		for i, ta := range agents {
			if ta.desired.Load() == desired[i] {
				return fmt.Errorf("agent %d has none yet", i+1)
			}
		}
		return nil
	})
	for i, ta := range agents {
		ta.waitPasses(t, 2)
		cs, _ := ta.rt.List(context.Background(), ids[i])
		if len(cs) != 1 || cs[0].ID != before[i].ID || !cs[0].Running || !cs[0].StartedAt.Equal(before[i].StartedAt) {
			t.Errorf("agent %d after the move runs %+v; want container %s running since %v, as before",
				i+1, cs, before[i].ID, before[i].StartedAt)
		}
		if got := ta.goAways.Load(); got != 1 {
			t.Errorf("agent %d was told to move %d times; want once", i+1, got)
		}
	}
}

// A server over --max-agents tells a new agent to go, and the agent
// connects to the other server.
func TestMaxAgentsTurnsAgentsAway(t *testing.T) {
	var logA testenv.Buffer
	cfg := replicaConfig(t.TempDir(), "", slog.New(slog.NewTextHandler(&logA, nil)))
	cfg.MaxAgents = 1
	a := startServerConfig(t, cfg)
	b := startReplica(t, a, replicaConfig("", "", nil))
	addrA, addrB := a.srv.AgentAddr(), b.srv.AgentAddr()
	c := newCutter()
	first := startRoamers(t, a, c, 1, "first", addrA)
	tok := token(t, a, 1)
	var logExtra testenv.Buffer
	extra := startAgentWith(t, a, fakert.New(), t.TempDir(), "extra", tok, nil, func(cfg *agent.Config) {
		cfg.Server, cfg.Servers = "", []string{addrA, addrB}
		cfg.Hooks.Dialer = c.dial
		cfg.Hooks.Rand = func(int) int { return 0 } // start at the full server
		cfg.Logger = slog.New(slog.NewTextHandler(&logExtra, nil))
	})
	waitOn(t, []*testAgent{extra}, "the extra agent on the second server", addrB)
	// Told to go before it was welcomed, the agent says so in its log:
	// the server never welcomed it, so no session ended.
	want := fmt.Sprintf(`msg="server asked the agent to move to another server" node_id=%s server=%s reason=overloaded`, nodeID(t, a, "extra"), addrA)
	if !strings.Contains(logExtra.String(), want) {
		t.Errorf("the extra agent's log does not say %s:\n%s", want, logExtra.String())
	}
	if on := first[0].on(); on != addrA {
		t.Errorf("the first agent is on %q; want it to stay on %s", on, addrA)
	}
	if !strings.Contains(logA.String(), "agents turned away") || !strings.Contains(logA.String(), "max_agents=1") {
		t.Errorf("the full server's log does not say it turned agents away:\n%s", logA.String())
	}
}

// An agent told to go avoids that server for a minute, though its other
// server is dead: it tries the other again and again, and the first only
// once the minute has passed. Time is the agent's fake clock.
func TestGoAwayAvoidsTheServerForAMinute(t *testing.T) {
	cfg := replicaConfig(t.TempDir(), "", nil)
	cfg.MaxAgents = 1
	a := startServerConfig(t, cfg)
	addrA, dead := a.srv.AgentAddr(), testenv.FreeAddr(t)
	c := newCutter()
	c.kill(dead)
	startRoamers(t, a, c, 1, "first", addrA)

	clock := clockwork.NewFakeClock()
	dials := make(chan string, 1000)
	tok := token(t, a, 1)
	startAgentWith(t, a, fakert.New(), t.TempDir(), "extra", tok, nil, func(cfg *agent.Config) {
		cfg.Server, cfg.Servers, cfg.Clock = "", []string{addrA, dead}, clock
		cfg.MaxBackoff = 4 * time.Second
		cfg.Hooks.Rand = func(int) int { return 0 } // enroll at the full server, then connect there
		cfg.Hooks.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
			dials <- addr
			return c.dial(ctx, addr)
		}
	})
	// Enrollment, then the session GoAway ended.
	for _, want := range []string{addrA, addrA} {
		select {
		case got := <-dials:
			if got != want {
				t.Fatalf("dialed %s; want %s", got, want)
			}
		case <-time.After(within):
			t.Fatalf("no dial of %s", want)
		}
	}
	told := clock.Now()
	// Every wait is at most MaxBackoff: steps of it reach each next dial.
	var got []string
	testenv.Eventually(t, within, "a dial of the first server again", func() error {
		select {
		case addr := <-dials:
			got = append(got, addr)
			if addr == addrA {
				return nil
			}
		default:
			clock.Advance(time.Second)
		}
		return fmt.Errorf("dials since GoAway: %v", got)
	})
	if since := clock.Since(told); since < time.Minute {
		t.Errorf("the server that said go was dialed again %s after; want a minute at least (dials %v)", since, got)
	}
	if len(got) < 10 {
		t.Errorf("the dead server was tried %d times in the minute; want it tried again and again", len(got)-1)
	}
}

// A --server name with several addresses is one entry per address, resolved
// at each attempt; the agent checks each server's certificate against the
// name. Here the name's first address has nobody listening.
func TestServerNameWithSeveralAddresses(t *testing.T) {
	ts := startServerConfig(t, server.Config{DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", Hosts: []string{"fleet.test"}})
	_, port, err := net.SplitHostPort(ts.srv.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	var lookups atomic.Int64
	ta := startAgentWith(t, ts, fakert.New(), t.TempDir(), "dns", token(t, ts, 1), nil, func(cfg *agent.Config) {
		cfg.Server = "fleet.test:" + port
		cfg.Hooks.LookupHost = func(_ context.Context, host string) ([]string, error) {
			if host != "fleet.test" {
				return nil, fmt.Errorf("lookup of %q", host)
			}
			lookups.Add(1)
			return []string{"127.0.0.2", "127.0.0.1"}, nil // nobody listens on 127.0.0.2
		}
		cfg.Hooks.Rand = func(n int) int { return n - 1 } // the last address sorted: 127.0.0.2
	})
	waitOn(t, []*testAgent{ta}, "the agent on the address that listens", net.JoinHostPort("127.0.0.1", port))
	// Enrollment at 127.0.0.2, then at 127.0.0.1, then the stream there.
	if n := lookups.Load(); n < 3 {
		t.Errorf("%d lookups of the name; want one per attempt, 3 at least", n)
	}
}
