package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// fourNodes is a fleet of four agents labelled role=web.
func fourNodes(t *testing.T) *harness.Fleet {
	t.Helper()
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	var specs [][2]string
	for _, n := range nodeNames(4) {
		specs = append(specs, [2]string{n, "role=web"})
	}
	f.AddAgents(specs...)
	return f
}

// healSpec is the deployment of the report: global, checked every
// second, one instance per batch, each healthy for 3 s before the next.
func healSpec(image string) string {
	return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: global
  selector:
    matchLabels: {role: web}
  container:
    image: %s
    healthCheck:
      http: {path: /healthz, port: 8080}
      interval: 1s
  update: {batchSize: 1, minHealthyTime: 3s}
`, image)
}

// TestRemovedContainerHealsDuringFirstRollout is the report: a
// container removed from outside dockfleet (`docker rm -f`) while the first
// rollout of its deployment is on batch 2 is recreated, and the rollout
// completes; it used to fail the instance ("container is marked for
// removal") and roll the whole deployment back, removing every container.
func TestRemovedContainerHealsDuringFirstRollout(t *testing.T) {
	f := fourNodes(t)
	nodes := nodeNames(4)
	f.Apply(healSpec("hello:v1"))

	var ro api.Rollout
	testenv.Eventually(t, 60*time.Second, "the rollout to reach batch 2", func() error {
		var err error
		if ro, err = f.Client.GetRollout(context.Background(), api.DefaultProject, "web"); err != nil {
			return err
		}
		if ro.State.Final() {
			t.Fatalf("rollout ended before batch 2: %s (%s)", ro.State, ro.Message)
		}
		if ro.Batch < 2 {
			return fmt.Errorf("batch %d: %s", ro.Batch, ro.Message)
		}
		return nil
	})
	// The instance of batch 1: on the new revision, out of the batch in flight.
	var victim api.Instance
	for _, in := range f.Instances("web") {
		if in.Revision == ro.To && !slices.Contains(ro.BatchInstances, in.ID) {
			victim = in
		}
	}
	if victim.ID == "" {
		t.Fatalf("no instance of batch 1 found in rollout %+v", ro)
	}
	cs := f.Containers(victim.NodeName)
	if len(cs) != 1 {
		t.Fatalf("node %s runs %d containers; want 1", victim.NodeName, len(cs))
	}
	removed := cs[0].ID
	t.Logf("removing %s's container %.12s during batch %d", victim.NodeName, removed, ro.Batch)
	if _, err := testenv.SDK(t).ContainerRemove(context.Background(), removed, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, 30*time.Second, "the removed container to be recreated", func() error {
		for _, c := range f.Containers(victim.NodeName) {
			if c.ID != removed && c.State == "running" {
				return nil
			}
		}
		return fmt.Errorf("no new running container on %s", victim.NodeName)
	})
	if ro = f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("rollout %s (%s); want succeeded", ro.State, ro.Message)
	}
	f.WaitHealthy("web", 4, 30*time.Second)
	for _, n := range nodes {
		if cs := f.Containers(n); len(cs) != 1 || cs[0].State != "running" {
			t.Errorf("node %s has containers %v; want one running", n, cs)
		}
	}
	if evs := f.Events("web", "instance.failed", "rollout.rolled_back", "rollout.failed"); len(evs) > 0 {
		t.Errorf("events %+v; want no failure", evs)
	}
	testenv.Eventually(t, 10*time.Second, "an event that says the container was recreated", func() error {
		for _, e := range f.Events("web") {
			if strings.HasSuffix(e.Message, ", recreated") {
				return nil
			}
		}
		return fmt.Errorf("events: %+v", f.Events("web"))
	})

	// A crash (here a kill) is restarted, counted and told.
	crashed := f.Containers(nodes[1])[0].ID
	if _, err := testenv.SDK(t).ContainerKill(context.Background(), crashed, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the killed container to be restarted and counted", func() error {
		for _, in := range f.Instances("web") {
			if in.NodeName == nodes[1] && (in.Restarts != 1 || in.State != api.InstanceHealthy) {
				return fmt.Errorf("instance on %s: %s, %d restarts", nodes[1], in.State, in.Restarts)
			}
		}
		for _, e := range f.Events("web", "instance.restarted") {
			if strings.HasSuffix(e.Message, nodes[1]+": exited 137, restarted") {
				return nil
			}
		}
		return fmt.Errorf("no instance.restarted event for %s", nodes[1])
	})
	if cs := f.Containers(nodes[1]); len(cs) != 1 || cs[0].ID != crashed {
		t.Errorf("node %s has containers %v; want %.12s restarted in place", nodes[1], cs, crashed)
	}
	out, _ := f.CLI("", "describe", "deployment", "web")
	if !strings.Contains(out, "RESTARTS") {
		t.Errorf("describe deployment web does not show restarts:\n%s", out)
	}
	if evs := f.Events("web", "instance.failed", "rollout.rolled_back", "rollout.failed"); len(evs) > 0 {
		t.Errorf("events %+v after the crash; want no failure", evs)
	}
}

// TestFailedFirstRolloutKeepsWhatRuns: a first rollout whose second batch
// cannot start (the four nodes share one Docker daemon, so only the first
// container gets the host port) fails and removes nothing: there is no
// earlier revision to roll back to, and the healthy instance keeps running.
func TestFailedFirstRolloutKeepsWhatRuns(t *testing.T) {
	f := fourNodes(t)
	_, port, _ := strings.Cut(testenv.FreeAddr(t), ":")
	out, code := f.CLI(fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: global
  selector:
    matchLabels: {role: web}
  container:
    image: hello:v1
    ports:
      - {containerPort: 8080, hostPort: %s}
    healthCheck:
      http: {path: /healthz, port: 8080}
      interval: 1s
  update: {batchSize: 1, minHealthyTime: 1s, autoRollback: true}
`, port), "apply", "-f", "-", "--wait", "--timeout", "90s")
	if code == 0 {
		t.Errorf("apply --wait of a rollout that cannot start exited 0; want non-zero. Output:\n%s", out)
	}
	ro := f.WaitRollout("web", 30*time.Second)
	if ro.State != api.RolloutFailed || !strings.Contains(ro.Message, "no earlier revision") {
		t.Fatalf("rollout %s (%s); want failed, saying there is no earlier revision", ro.State, ro.Message)
	}
	var healthy []api.Instance
	for _, in := range f.Instances("web") {
		if in.State == api.InstanceHealthy {
			healthy = append(healthy, in)
		}
	}
	if len(healthy) != 1 {
		t.Fatalf("instances %+v; want one healthy", f.Instances("web"))
	}
	running := f.Images(healthy[0].NodeName)[healthy[0].NodeName]
	if len(running) != 1 || running[0] != "hello:v1" {
		t.Errorf("node %s runs %v after the failed rollout; want its hello:v1 kept", healthy[0].NodeName, running)
	}
	if evs := f.Events("web", "rollout.rolled_back"); len(evs) > 0 {
		t.Errorf("events %+v; want no roll back", evs)
	}
}
