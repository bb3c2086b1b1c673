package faults

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestAgentReenrolledAfterDataLoss kills an agent with SIGKILL, wipes its
// data dir (a reinstalled host) and re-enrolls it under its name with a
// token bound to the node: it is the same node, and it adopts its running
// containers, restarting none, with no duplicate at any sample.
func TestAgentReenrolledAfterDataLoss(t *testing.T) {
	f, nodes := webNodes(t, 2)
	f.Apply(harness.WebSpec("hello:v1", 1, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitHealthy("web", len(nodes), 90*time.Second)
	id := f.Node("w1").ID
	started := startTimes(t, f.Containers("w1"))
	w := watch(t, f)

	f.Agents["w1"].Kill()
	if err := os.RemoveAll(filepath.Join(f.Dir, "agent-w1")); err != nil {
		t.Fatal(err)
	}
	f.StartAgent("w1", f.Token("--node", "w1"), "")
	f.WaitNodeState("w1", api.NodeReady, 30*time.Second)
	if n := f.Node("w1"); n.ID != id {
		t.Fatalf("w1 re-enrolled as node %s; want its old ID %s", n.ID, id)
	}
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	f.WaitReconciled("w1", 30*time.Second) // as in TestAgentKilled
	w.check(t)
	if now := startTimes(t, f.Containers("w1")); !sameStarts(started, now) {
		t.Errorf("w1's containers (ID → started) went from %v to %v; want the same ones, never restarted", started, now)
	}
}
