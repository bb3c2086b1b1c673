package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// agentKills is how many times TestAgentKilled kills the agent.
const agentKills = 10

// TestAgentKilled kills one agent with SIGKILL 10 times, each at a random
// moment after its start (while it enrolls, connects or reconciles, or
// idles), and restarts it: its containers are the same ones, started once,
// and no sample of docker ps ever shows two running containers of one
// instance.
func TestAgentKilled(t *testing.T) {
	f, nodes := webNodes(t, 2)
	r := faultRand(t)
	f.Apply(harness.WebSpec("hello:v1", 1, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitHealthy("web", len(nodes), 90*time.Second)
	started := startTimes(t, f.Containers("w1"))
	w := watch(t, f)

	for k := 1; k <= agentKills; k++ {
		wait := between(r, 100*time.Millisecond, 4*time.Second)
		t.Logf("fault %d/%d: kill -9 of agent w1 %v after its start", k, agentKills, wait.Round(time.Millisecond))
		time.Sleep(wait) // the fault's random moment, not a wait for an event
		f.Agents["w1"].Kill()
		f.StartAgent("w1", "", "")
	}
	f.WaitNodeState("w1", api.NodeReady, 30*time.Second)
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	// A whole reconcile pass after the last restart, so that one that would
	// replace the container has run.
	f.WaitReconciled("w1", 30*time.Second)
	w.check(t)
	if now := startTimes(t, f.Containers("w1")); !sameStarts(started, now) {
		t.Errorf("w1's containers (ID → started) went from %v to %v; want the same ones, never restarted", started, now)
	}
}

// startTimes maps the containers' IDs to when Docker last started them.
func startTimes(t *testing.T, cs []mcontainer.Summary) map[string]string {
	t.Helper()
	out, err := containerStarts(testenv.SDK(t), cs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// containerStarts is startTimes for a wait, in which a container removed
// after it was listed is no failure.
func containerStarts(sdk *client.Client, cs []mcontainer.Summary) (map[string]string, error) {
	out := map[string]string{}
	for _, c := range cs {
		res, err := sdk.ContainerInspect(context.Background(), c.ID, client.ContainerInspectOptions{})
		if err != nil {
			return nil, fmt.Errorf("inspecting container %s: %w", c.ID, err)
		}
		out[c.ID[:12]] = res.Container.State.StartedAt
	}
	return out, nil
}

func sameStarts(a, b map[string]string) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for id, at := range a {
		if b[id] != at {
			return false
		}
	}
	return true
}
