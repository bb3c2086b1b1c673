package faults

import (
	"os"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestServerDown kills the server (SIGKILL) and keeps it down for a while (2 minutes; the soak is
// DOCKFLEET_FAULT_SERVER_DOWN=10m): the agents keep their containers, not one
// is restarted or duplicated, and when the server returns the fleet is ready
// and healthy with the same containers.
func TestServerDown(t *testing.T) {
	down := 2 * time.Minute
	if s := os.Getenv("DOCKFLEET_FAULT_SERVER_DOWN"); s != "" {
		var err error
		if down, err = time.ParseDuration(s); err != nil || down <= 0 {
			t.Fatalf("DOCKFLEET_FAULT_SERVER_DOWN=%q: want a positive duration such as 10m", s)
		}
	}
	f, nodes := webNodes(t, 2)
	f.Apply(harness.WebSpec("hello:v1", 1, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitHealthy("web", len(nodes), 90*time.Second)
	started := map[string]map[string]string{}
	for _, n := range nodes {
		started[n] = startTimes(t, f.Containers(n))
	}
	w := watch(t, f)

	t.Logf("fault: kill -9 of the server, down for %v", down)
	f.Server.Kill()
	time.Sleep(down) // the fault's length, not a wait for an event
	f.StartServer()
	for _, n := range nodes {
		f.WaitNodeState(n, api.NodeReady, 60*time.Second)
	}
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	w.check(t)
	for _, n := range nodes {
		if now := startTimes(t, f.Containers(n)); !sameStarts(started[n], now) {
			t.Errorf("%s's containers (ID → started) went from %v to %v; want the same ones, never restarted", n, started[n], now)
		}
	}
}
