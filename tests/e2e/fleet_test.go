package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

const globalWeb = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  mode: global
  selector:
    matchLabels:
      role: web
  container:
    image: hello:v1
    ports:
      - containerPort: 8080
    healthCheck:
      http:
        path: /healthz
        port: 8080
      interval: 1s
  update:
    batchSize: 100%
    minHealthyTime: 0s
`

const replicatedApi = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: api
spec:
  mode: replicated
  replicas: 5
  container:
    image: hello:v2
    healthCheck:
      tcp:
        port: 8080
      interval: 1s
  update:
    batchSize: 100%
    minHealthyTime: 0s
`

// TestWalkingFleet drives one server and three agents through what a new
// user does first: enroll, deploy globally and replicated, heal, relabel,
// lose and regain a node, restart the server, delete.
func TestWalkingFleet(t *testing.T) {
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	f.AddAgents([2]string{"n1", "role=web"}, [2]string{"n2", "role=web"}, [2]string{"n3", "role=db"})
	// The steps build on each other: once one failed the fleet is in no
	// known state, and the steps after it do not run (the test has failed).
	step := func(name string, fn func(t *testing.T)) {
		if !t.Failed() {
			t.Run(name, fn)
		}
	}

	step("nodes report facts", func(t *testing.T) {
		out, code := f.CLI("", "nodes")
		if code != 0 {
			t.Fatalf("nodes: exit %d: %s", code, out)
		}
		for _, name := range []string{"n1", "n2", "n3"} {
			if !strings.Contains(out, name) {
				t.Errorf("nodes output lacks %s:\n%s", name, out)
			}
			n := f.Node(name)
			if n.Facts.DockerVersion == "" || n.Facts.CPUs == 0 || n.Facts.MemoryBytes == 0 {
				t.Errorf("node %s facts = %+v; want Docker version, CPUs and memory", name, n.Facts)
			}
		}
	})

	step("global deployment lands on the 2 matching nodes", func(t *testing.T) {
		out := f.Apply(globalWeb)
		if !strings.Contains(out, "deployment/web created") {
			t.Errorf("apply said %q; want deployment/web created", out)
		}
		is := f.WaitHealthy("web", 2, 30*time.Second)
		nodes := map[string]bool{}
		for _, i := range is {
			nodes[i.NodeName] = true
		}
		if !nodes["n1"] || !nodes["n2"] {
			t.Errorf("instances on %v; want n1 and n2", nodes)
		}
		for name, want := range map[string]int{"n1": 1, "n2": 1, "n3": 0} {
			if got := len(f.Containers(name)); got != want {
				t.Errorf("%s runs %d containers; want %d", name, got, want)
			}
		}
		out, _ = f.CLI(globalWeb, "apply", "-f", "-")
		if !strings.Contains(out, "unchanged") {
			t.Errorf("second apply said %q; want unchanged", out)
		}
	})

	step("a container removed by hand is healed", func(t *testing.T) {
		cs := f.Containers("n1")
		if len(cs) != 1 {
			t.Fatalf("n1 runs %d containers; want 1", len(cs))
		}
		removed := cs[0].ID
		removeForce(t, testenv.SDK(t), removed)
		begin := time.Now()
		// A hang guard, not a speed target (how fast is for benchmarks): the
		// agent notices at once from Docker's events, or at its next resync.
		testenv.Eventually(t, 60*time.Second, "n1's container to be recreated", func() error {
			cs := f.Containers("n1")
			if len(cs) != 1 || cs[0].State != "running" {
				return fmt.Errorf("%d containers: %v", len(cs), cs)
			}
			if cs[0].ID == removed {
				return fmt.Errorf("the removed container %s is still there", removed)
			}
			return nil
		})
		t.Logf("healed in %v", time.Since(begin).Round(time.Millisecond))
		f.WaitHealthy("web", 2, 60*time.Second)
	})

	step("replicated 5 over 3 nodes spreads 2/2/1", func(t *testing.T) {
		f.Apply(replicatedApi)
		is := f.WaitHealthy("api", 5, 40*time.Second)
		per := map[string]int{}
		for _, i := range is {
			per[i.NodeName]++
		}
		counts := []int{per["n1"], per["n2"], per["n3"]}
		two, one := 0, 0
		for _, c := range counts {
			switch c {
			case 2:
				two++
			case 1:
				one++
			}
		}
		if two != 2 || one != 1 {
			t.Errorf("instances per node = %v; want 2/2/1 in some order", per)
		}
	})

	step("relabelling a node moves the global deployment", func(t *testing.T) {
		if out, code := f.CLI("", "node", "label", "n3", "role=web"); code != 0 {
			t.Fatalf("node label: exit %d: %s", code, out)
		}
		f.WaitHealthy("web", 3, 30*time.Second)
		if out, code := f.CLI("", "node", "label", "n3", "role-"); code != 0 {
			t.Fatalf("node label: exit %d: %s", code, out)
		}
		f.WaitHealthy("web", 2, 30*time.Second)
		testenv.Eventually(t, 15*time.Second, "n3 to run only its api instance", func() error {
			for _, c := range f.Containers("n3") {
				if c.Labels["dockfleet.deployment"] == "web" {
					return fmt.Errorf("web container %s still there", c.ID[:12])
				}
			}
			return nil
		})
	})

	step("a killed agent's node turns unreachable, its containers keep running", func(t *testing.T) {
		before := f.Containers("n1")
		started := startTimes(t, before)
		f.Agents["n1"].Kill()
		// The wait is a hang guard; the server's promise is checked on its
		// own record, so that a test slowed down by a loaded machine does
		// not read its own lateness as the server's.
		f.WaitNodeState("n1", api.NodeUnreachable, 3*f.Heartbeat+60*time.Second)
		f.CheckUnreachableWindow("n1")
		if got := startTimes(t, f.Containers("n1")); !sameStarts(started, got) {
			t.Errorf("containers of n1 changed while its agent was down: before %v, after %v", started, got)
		}
		f.StartAgent("n1", "", "")
		f.WaitNodeState("n1", api.NodeReady, 30*time.Second)
		f.WaitHealthy("web", 2, 30*time.Second)
		f.WaitReconciled("n1", 30*time.Second)
		if got := startTimes(t, f.Containers("n1")); !sameStarts(started, got) {
			t.Errorf("restarting the agent restarted containers: before %v, after %v", started, got)
		}
	})

	step("a server restart restarts no container", func(t *testing.T) {
		var started []map[string]time.Time
		for _, n := range []string{"n1", "n2", "n3"} {
			started = append(started, startTimes(t, f.Containers(n)))
		}
		f.Server.Stop()
		f.StartServer()
		for _, n := range []string{"n1", "n2", "n3"} {
			f.WaitNodeState(n, api.NodeReady, 30*time.Second)
		}
		f.WaitHealthy("web", 2, 20*time.Second)
		f.WaitHealthy("api", 5, 20*time.Second)
		for _, n := range []string{"n1", "n2", "n3"} {
			f.WaitReconciled(n, 30*time.Second)
		}
		for i, n := range []string{"n1", "n2", "n3"} {
			if got := startTimes(t, f.Containers(n)); !sameStarts(started[i], got) {
				t.Errorf("server restart changed containers on %s: before %v, after %v", n, started[i], got)
			}
		}
	})

	step("delete removes every container", func(t *testing.T) {
		for _, d := range []string{"web", "api"} {
			if out, code := f.CLI("", "delete", "deployment", d); code != 0 || !strings.Contains(out, "deleted") {
				t.Fatalf("delete %s: exit %d: %s", d, code, out)
			}
		}
		testenv.Eventually(t, 20*time.Second, "all containers to go", func() error {
			for _, n := range []string{"n1", "n2", "n3"} {
				if cs := f.Containers(n); len(cs) != 0 {
					return fmt.Errorf("%s still runs %d", n, len(cs))
				}
			}
			return nil
		})
		if is := f.Instances(""); len(is) != 0 {
			t.Errorf("%d instances left after delete", len(is))
		}
	})
}

// startTimes maps container IDs to their start times, from Docker.
func startTimes(t *testing.T, cs []mcontainer.Summary) map[string]time.Time {
	t.Helper()
	sdk := testenv.SDK(t)
	out := map[string]time.Time{}
	for _, c := range cs {
		res, err := sdk.ContainerInspect(context.Background(), c.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatalf("inspecting %s: %v", c.ID, err)
		}
		started, _ := time.Parse(time.RFC3339Nano, res.Container.State.StartedAt)
		out[c.ID] = started
	}
	return out
}

func sameStarts(a, b map[string]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for id, t := range a {
		if u, ok := b[id]; !ok || !u.Equal(t) {
			return false
		}
	}
	return true
}

func removeForce(t *testing.T, sdk *client.Client, id string) {
	t.Helper()
	if _, err := sdk.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatalf("docker rm -f %s: %v", id, err)
	}
}
