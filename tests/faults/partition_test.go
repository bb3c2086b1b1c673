package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// partitionGrace is the server's --reschedule-after in TestAgentPartitioned.
const partitionGrace = 10 * time.Second

// TestAgentPartitioned runs one agent in a network namespace joined to the
// server by a veth pair, and takes the link down for twice the grace period:
// the node is unreachable within the documented window (missed heartbeats ×
// interval, as Fleet.CheckUnreachableWindow checks it), its global instance keeps running, its replicated one is
// rescheduled once the grace period has passed, and when the link is back
// every replica runs exactly once. It needs root, for ip netns.
func TestAgentPartitioned(t *testing.T) {
	testenv.HelloImages(t)
	ns, hostIf, hostIP, nsIP := netns(t)
	f := harness.NewFleet(t, func(f *harness.Fleet) {
		_, port, _ := net.SplitHostPort(f.AgentAddr)
		f.ServerArgs = []string{"--agent-addr", "0.0.0.0:" + port, "--host", hostIP, "--reschedule-after", partitionGrace.String()}
		f.Netns["n1"] = ns
	})
	_, port, _ := net.SplitHostPort(f.AgentAddr)
	f.AddAgents([2]string{"w1", "role=web"}, [2]string{"w2", "role=web"})
	f.StartAgent("n1", f.Token("--agent-labels", "role"), "role=web", "--server", hostIP+":"+port)
	f.WaitNodeState("n1", api.NodeReady, 30*time.Second)
	t.Logf("agent n1 runs in network namespace %s (%s), the server's end is %s on %s", ns, nsIP, hostIP, hostIf)
	nodes := []string{"w1", "w2", "n1"}

	f.Apply(partitionSpec("g", "global", 0))
	f.Apply(partitionSpec("r", "replicated", 3))
	waitRunning(t, f, "g", 3, 90*time.Second)
	replicas := waitRunning(t, f, "r", 3, 90*time.Second)
	var cutOff string // the replica on n1
	for _, i := range replicas {
		if i.NodeName == "n1" {
			cutOff = i.ID
		}
	}
	if cutOff == "" {
		t.Fatalf("no replica of r on n1: %+v", replicas)
	}
	global := startTimes(t, ofDeployment(f.Containers("n1"), "g"))
	w := watch(t, f)

	cut := time.Now()
	link(t, hostIf, "down")
	t.Logf("fault: link %s down at %s, for %v", hostIf, cut.Format("15:04:05.000"), 2*partitionGrace)
	// A hang guard; the window is checked on the server's own record.
	took := f.WaitNodeState("n1", api.NodeUnreachable, 3*f.Heartbeat+60*time.Second)
	unreachable := time.Now()
	t.Logf("n1 seen unreachable %v after the cut", took.Round(time.Millisecond))
	f.CheckUnreachableWindow("n1")
	testenv.Eventually(t, partitionGrace+20*time.Second, "r's replica on n1 to move", func() error {
		for _, i := range f.Instances("r") {
			if i.NodeName == "n1" {
				return fmt.Errorf("instance %s still on n1", i.ID)
			}
		}
		return nil
	})
	moved := time.Since(unreachable)
	t.Logf("r's replica moved off n1 %v after n1 was unreachable", moved.Round(time.Millisecond))
	if moved < partitionGrace-time.Second {
		t.Errorf("r's replica moved %v after n1 was unreachable; want not before the grace period, %v", moved.Round(time.Millisecond), partitionGrace)
	}
	waitRunning(t, f, "r", 3, 60*time.Second)
	time.Sleep(time.Until(cut.Add(2 * partitionGrace))) // the fault's length
	if now := startTimes(t, ofDeployment(f.Containers("n1"), "g")); !sameStarts(global, now) {
		t.Errorf("n1's container of g during the cut: %v; want the same one still running, as before: %v", now, global)
	}

	link(t, hostIf, "up")
	t.Logf("fault healed: link %s up", hostIf)
	f.WaitNodeState("n1", api.NodeReady, 60*time.Second)
	sdk := testenv.SDK(t)
	ids := map[string]bool{}
	for _, n := range nodes {
		ids[f.NodeIDs[n]] = true
	}
	testenv.Eventually(t, 60*time.Second, "exactly one running container per replica of r", func() error {
		res, err := sdk.ContainerList(context.Background(), client.ContainerListOptions{
			Filters: make(client.Filters).Add("label", container.LabelDeployment+"=r").Add("status", "running")})
		if err != nil {
			return err
		}
		seen := map[string]int{}
		n := 0
		for _, c := range res.Items {
			if ids[c.Labels[container.LabelNode]] {
				seen[c.Labels[container.LabelInstance]]++
				n++
			}
		}
		if n != 3 || len(seen) != 3 {
			return fmt.Errorf("%d running containers of r for %d instances: %v", n, len(seen), seen)
		}
		return nil
	})
	waitRunning(t, f, "r", 3, 30*time.Second)
	waitRunning(t, f, "g", 3, 30*time.Second)
	w.check(t)
	// The replica stopped on n1 is removed a moment later.
	testenv.Eventually(t, 30*time.Second, "n1 to keep only its container of g, as before the cut", func() error {
		now, err := containerStarts(sdk, f.Containers("n1"))
		if err != nil {
			return err // the replica's container went between listing and inspecting
		}
		if !sameStarts(global, now) {
			return fmt.Errorf("n1's containers (ID → started) are %v; want %v", now, global)
		}
		return nil
	})
}

// ofDeployment keeps the containers of the deployment.
func ofDeployment(cs []mcontainer.Summary, deployment string) []mcontainer.Summary {
	var out []mcontainer.Summary
	for _, c := range cs {
		if c.Labels[container.LabelDeployment] == deployment {
			out = append(out, c)
		}
	}
	return out
}

// partitionSpec is deployment name of hello:v1 over the nodes labelled
// role=web, without a health check: the agent in its own network namespace
// cannot reach the containers' addresses.
func partitionSpec(name, mode string, replicas int) string {
	r := ""
	if replicas > 0 {
		r = fmt.Sprintf("  replicas: %d\n", replicas)
	}
	return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: %s
spec:
  mode: %s
%s  selector:
    matchLabels:
      role: web
  container:
    image: hello:v1
  update:
    batchSize: 100%%
    minHealthyTime: 0s
`, name, mode, r)
}

// waitRunning waits until deployment has exactly n instances, all running
// (with no health check, running is as good as it gets).
func waitRunning(t *testing.T, f *harness.Fleet, deployment string, n int, within time.Duration) []api.Instance {
	t.Helper()
	var is []api.Instance
	testenv.Eventually(t, within, fmt.Sprintf("%d running instances of %s", n, deployment), func() error {
		is = f.Instances(deployment)
		if len(is) != n {
			return fmt.Errorf("%d instances", len(is))
		}
		for _, i := range is {
			if i.State != api.InstanceRunning && i.State != api.InstanceHealthy {
				return fmt.Errorf("instance %s on %s is %s %s", i.ID, i.NodeName, i.State, i.Reason)
			}
		}
		return nil
	})
	return is
}

// netns makes a network namespace joined to this one by a veth pair, both
// removed when the test ends, and returns the namespace, this side's
// interface, and both ends' addresses.
func netns(t *testing.T) (ns, hostIf, hostIP, nsIP string) {
	t.Helper()
	id := testenv.ID()
	ns, hostIf, nsIf := "dockfleet-"+id, "dfh"+id[:8], "dfn"+id[:8]
	var b byte
	fmt.Sscanf(id[:2], "%x", &b)
	hostIP, nsIP = fmt.Sprintf("10.254.%d.1", b), fmt.Sprintf("10.254.%d.2", b)
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ip (iproute2) is required when CI=true: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ip netns add (CI runs as root): %v: %s", err, out)
		}
		t.Skipf("skipping: ip netns add needs root: %v: %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
	})
	for _, cmd := range [][]string{
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", ns},
		{"addr", "add", hostIP + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", ns, "addr", "add", nsIP + "/30", "dev", nsIf},
		{"-n", ns, "link", "set", nsIf, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", cmd...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(cmd, " "), err, out)
		}
	}
	return ns, hostIf, hostIP, nsIP
}

// link sets the interface up or down.
func link(t *testing.T, dev, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", dev, state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v: %s", dev, state, err, out)
	}
}
