package faults

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// redeliveries is how many times TestSameDesiredStateRedelivered has the
// server deliver one desired state again.
const redeliveries = 50

// TestSameDesiredStateRedelivered is the redelivery fault through the real
// protocol: an agent reaches the server through a proxy the test cuts 50
// times, and on each reconnection the server delivers the node's desired
// state again, the same generation (the agent says which one it has in its
// hello, which the server logs). No container is stopped or restarted, and
// no sample of docker ps shows two running containers of one instance.
// (internal/agent's TestOlderGenerationIgnored delivers an older generation
// after a newer one, which a real server never sends.)
func TestSameDesiredStateRedelivered(t *testing.T) {
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	toServer := newProxy(t, "tcp", testenv.FreeAddr(t), f.AgentAddr)
	f.StartAgent("p1", f.Token("--agent-labels", "role"), "role=web", "--server", toServer.addr)
	f.WaitNodeState("p1", api.NodeReady, 30*time.Second)
	f.Apply(harness.WebSpec("hello:v1", 1, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitHealthy("web", 1, 90*time.Second)
	started := startTimes(t, f.Containers("p1"))
	w := watch(t, f)

	hellos := regexp.MustCompile(`msg="agent connected" node_id=` + regexp.QuoteMeta(f.NodeIDs["p1"]) + ` generation=(\d+)`)
	count := func() int { return len(hellos.FindAllString(f.Server.Out.String(), -1)) }
	first := count() // the sessions before the faults
	for k := 1; k <= redeliveries; k++ {
		before := count()
		toServer.close()
		toServer.open()
		testenv.Eventually(t, 60*time.Second, fmt.Sprintf("redelivery %d/%d: p1 to reconnect", k, redeliveries), func() error {
			if n := count(); n <= before {
				return fmt.Errorf("%d sessions of p1", n)
			}
			return nil
		})
	}
	f.WaitNodeState("p1", api.NodeReady, 30*time.Second)
	f.WaitReconciled("p1", 30*time.Second)
	w.check(t)

	// Every session since the faults began said the same generation: the
	// agent was given no other state meanwhile, only the same one again.
	ms := hellos.FindAllStringSubmatch(f.Server.Out.String(), -1)[first:]
	gens := map[string]int{}
	for _, m := range ms {
		gens[m[1]]++
	}
	if len(ms) < redeliveries || len(gens) != 1 {
		t.Errorf("p1 connected %d times during the faults, with generations (→ sessions) %v; want at least %d, all with one generation", len(ms), gens, redeliveries)
	}
	if now := startTimes(t, f.Containers("p1")); !sameStarts(started, now) {
		t.Errorf("p1's containers (ID → started) went from %v to %v; want the same ones, never restarted", started, now)
	}
}
