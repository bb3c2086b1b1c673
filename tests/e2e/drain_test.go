package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

const drainGlobal = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: logs
spec:
  mode: global
  container:
    image: hello:v1
    healthCheck:
      http:
        path: /healthz
        port: 8080
      interval: 1s
  update:
    minHealthyTime: 0s
`

const drainReplicated = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: api
spec:
  mode: replicated
  replicas: 3
  container:
    image: hello:v1
    healthCheck:
      http:
        path: /healthz
        port: 8080
      interval: 1s
  update:
    maxUnavailable: 1
    minHealthyTime: 0s
`

// running reports whether Docker runs container id; a removed one does not.
func running(sdk *client.Client, id string) bool {
	res, err := sdk.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	return err == nil && res.Container.State.Running
}

// TestNodeDrain drains one of three real agents with the CLI: the replicated
// instance on it stops only once its replacement elsewhere is healthy, the
// global one stops after it, drain --wait returns when the node is drained,
// and uncordon brings the global instance back.
func TestNodeDrain(t *testing.T) {
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	f.AddAgents([2]string{"n1", ""}, [2]string{"n2", ""}, [2]string{"n3", ""})
	f.Apply(drainGlobal + "---\n" + drainReplicated)
	f.WaitHealthy("logs", 3, 90*time.Second)
	var replicated, global string // the containers on n3
	for _, in := range f.WaitHealthy("api", 3, 90*time.Second) {
		if in.NodeName == "n3" {
			replicated = in.ContainerID
		}
	}
	for _, in := range f.Instances("logs") {
		if in.NodeName == "n3" {
			global = in.ContainerID
		}
	}
	if replicated == "" || global == "" {
		t.Fatalf("no container IDs of n3's instances: api %q, logs %q", replicated, global)
	}

	// Watch the drain: whenever n3's api container is down, the three api
	// instances elsewhere must be healthy; whenever its logs container is
	// down, the api one must be too.
	sdk := testenv.SDK(t)
	stop := make(chan struct{})
	var (
		wg         sync.WaitGroup
		violations []string
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			apiUp, logsUp := running(sdk, replicated), running(sdk, global)
			is, err := f.Client.ListInstances(context.Background(), api.DefaultProject, "api")
			if err != nil {
				continue // the server is busy; the next sample counts
			}
			healthy := 0
			for _, in := range is {
				if in.NodeName != "n3" && in.State == api.InstanceHealthy {
					healthy++
				}
			}
			if !apiUp && healthy < 3 {
				violations = append(violations, fmt.Sprintf("n3's api container was down with %d healthy api instances elsewhere", healthy))
			}
			if !logsUp && apiUp {
				violations = append(violations, "n3's logs container was down while its api container ran")
			}
		}
	})
	out, code := f.CLI("", "node", "drain", "n3", "--wait", "--timeout", "3m")
	close(stop)
	wg.Wait()
	if code != 0 || !strings.Contains(out, "node/n3 drained") {
		t.Fatalf("node drain --wait: exit %d: %q; want 0, drained", code, out)
	}
	if len(violations) > 0 {
		t.Errorf("during the drain:\n%s", strings.Join(slices.Compact(violations), "\n"))
	}
	if apiUp, logsUp := running(sdk, replicated), running(sdk, global); apiUp || logsUp {
		t.Errorf("n3's containers run after the drain: api %v, logs %v", apiUp, logsUp)
	}
	f.WaitHealthy("api", 3, 60*time.Second)
	for _, in := range f.Instances("api") {
		if in.NodeName == "n3" {
			t.Errorf("an api instance is on the drained node: %+v", in)
		}
	}
	if out, code := f.CLI("", "nodes"); code != 0 || !strings.Contains(out, "ready,drained") {
		t.Errorf("nodes: exit %d; want n3 ready,drained:\n%s", code, out)
	}
	if out, code := f.CLI("", "describe", "node", "n3"); code != 0 || !strings.Contains(out, "drained: runs nothing") {
		t.Errorf("describe node n3: exit %d; want it drained:\n%s", code, out)
	}

	if out, code := f.CLI("", "node", "undrain", "n3"); code != 0 || out != "node/n3 uncordoned\n" {
		t.Fatalf("node undrain: exit %d: %q", code, out)
	}
	testenv.Eventually(t, 60*time.Second, "the logs instance back on n3", func() error {
		for _, in := range f.Instances("logs") {
			if in.NodeName == "n3" && in.State == api.InstanceHealthy {
				return nil
			}
		}
		return errors.New("not yet")
	})
	if out, code := f.CLI("", "node", "drain", "ghost"); code != 1 || !strings.Contains(out, `no node with ID or name "ghost"`) {
		t.Errorf("node drain ghost: exit %d: %q; want 1, saying there is no such node", code, out)
	}
}

// TestReEnrollAdoptsContainers: a host that lost its agent's data dir
// re-enrolls under its old name with a node-bound token; it gets its node
// back (ID, labels, instances), and the agent adopts the containers that
// run, restarting none.
func TestReEnrollAdoptsContainers(t *testing.T) {
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	f.AddAgents([2]string{"host", "role=web"})
	f.Apply(globalWeb + "---\n" + strings.Replace(replicatedApi, "replicas: 5", "replicas: 2", 1))
	web := f.WaitHealthy("web", 1, 90*time.Second)
	apis := f.WaitHealthy("api", 2, 90*time.Second)
	before := f.Node("host")
	containers := f.Containers("host")
	starts := startTimes(t, containers)
	if len(starts) != 3 {
		t.Fatalf("%d containers on host; want 3", len(starts))
	}

	f.Agents["host"].Stop()
	if err := os.RemoveAll(filepath.Join(f.Dir, "agent-host")); err != nil {
		t.Fatal(err)
	}
	tok := f.Token("--node", "host")
	agent := f.StartAgent("host", tok, "")
	// The new agent logs each instance's state as it first sees it.
	var ids []string
	for _, in := range append(web, apis...) {
		ids = append(ids, in.ID)
	}
	testenv.Eventually(t, 60*time.Second, "the new agent to see every instance healthy", func() error {
		out := agent.Out.String()
		for _, id := range ids {
			if !strings.Contains(out, "instance_id="+id+" state=healthy") {
				return fmt.Errorf("instance %s not yet healthy in the agent's log", id)
			}
		}
		return nil
	})

	after := f.Node("host")
	if after.ID != before.ID || !maps.Equal(after.Labels, before.Labels) || after.Epoch != before.Epoch+1 || after.State != api.NodeReady {
		t.Errorf("node after re-enrollment = %+v; want ID %s, labels %v, epoch %d, ready", after, before.ID, before.Labels, before.Epoch+1)
	}
	if got := startTimes(t, f.Containers("host")); !sameStarts(starts, got) {
		t.Errorf("containers after re-enrollment = %v; want the same ones, not restarted: %v", got, starts)
	}
	for _, in := range append(f.Instances("web"), f.Instances("api")...) {
		if !slices.Contains(ids, in.ID) {
			t.Errorf("instance %s on %s is new; want the old ones kept", in.ID, in.NodeName)
		}
	}
	if got := len(f.Instances("")); got != 3 {
		t.Errorf("%d instances after re-enrollment; want 3", got)
	}
	// Docker still labels each container with its instance.
	for _, c := range f.Containers("host") {
		if !slices.Contains(ids, c.Labels[container.LabelInstance]) {
			t.Errorf("container %s belongs to instance %q; want one of %v", c.ID, c.Labels[container.LabelInstance], ids)
		}
	}
}

// TestNodeDrainResumesAfterRestart: a drain that waits for room survives a
// server killed -9, and goes on once room appears.
func TestNodeDrainResumesAfterRestart(t *testing.T) {
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	f.AddAgents([2]string{"n1", "pool=yes"}, [2]string{"n2", ""}, [2]string{"n3", "pool=yes"})
	f.Apply(strings.Replace(drainReplicated, "replicas: 3\n", "replicas: 2\n  selector:\n    matchLabels:\n      pool: \"yes\"\n", 1))
	f.WaitHealthy("api", 2, 90*time.Second)
	if out, code := f.CLI("", "node", "cordon", "n1"); code != 0 || out != "node/n1 cordoned\n" {
		t.Fatalf("node cordon n1: exit %d: %q", code, out)
	}
	if out, code := f.CLI("", "node", "drain", "n3"); code != 0 || out != "node/n3 draining\n" {
		t.Fatalf("node drain n3: exit %d: %q", code, out)
	}
	// With n1 cordoned and n2 not in the pool, n3's instance has nowhere
	// to go: it stays, healthy.
	if out, code := f.CLI("", "node", "drain", "n3", "--wait", "--timeout", "3s"); code != 1 || !strings.Contains(out, "still draining") {
		t.Fatalf("node drain --wait with nowhere to go: exit %d: %q; want 1, still draining", code, out)
	}
	on3 := 0
	for _, in := range f.WaitHealthy("api", 2, 10*time.Second) {
		if in.NodeName == "n3" {
			on3++
		}
	}
	if on3 != 1 {
		t.Fatalf("%d api instances on n3 while its drain waits; want 1", on3)
	}

	f.Server.Kill()
	f.StartServer()
	if n := f.Node("n3"); n.Scheduling != api.NodeDraining {
		t.Errorf("n3 after the restart: scheduling %q; want draining", n.Scheduling)
	}
	if n := f.Node("n1"); n.Scheduling != api.NodeCordoned {
		t.Errorf("n1 after the restart: scheduling %q; want cordoned", n.Scheduling)
	}
	if out, code := f.CLI("", "node", "uncordon", "n1"); code != 0 {
		t.Fatalf("node uncordon n1: exit %d: %q", code, out)
	}
	if out, code := f.CLI("", "node", "drain", "n3", "--wait", "--timeout", "3m"); code != 0 || !strings.HasSuffix(out, "node/n3 drained\n") {
		t.Fatalf("node drain --wait after the restart: exit %d: %q; want 0, drained", code, out)
	}
	for _, in := range f.WaitHealthy("api", 2, 60*time.Second) {
		if in.NodeName != "n1" {
			t.Errorf("api instance on %s after the drain; want both on n1", in.NodeName)
		}
	}
}
