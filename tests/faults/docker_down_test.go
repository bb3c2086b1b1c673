package faults

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestDockerUnreachable points an agent at a proxy of the Docker socket and
// closes the proxy: the node reports the error (the ERROR column of
// dockfleet nodes), the server keeps the node, and when the proxy opens
// again the agent reconciles with the same containers, without duplicates.
func TestDockerUnreachable(t *testing.T) {
	f, nodes := webNodes(t, 1)
	proxy := newProxy(t, "unix", filepath.Join(t.TempDir(), "docker.sock"), "/var/run/docker.sock")
	tok := f.Token("--agent-labels", "role")
	f.StartAgent("d1", tok, "role=web", "--docker-host", "unix://"+proxy.addr)
	f.WaitNodeState("d1", api.NodeReady, 20*time.Second)
	nodes = append(nodes, "d1")
	f.Apply(harness.WebSpec("hello:v1", 1, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitHealthy("web", len(nodes), 90*time.Second)
	started := startTimes(t, f.Containers("d1"))
	w := watch(t, f)

	proxy.close()
	down := time.Now()
	var reported string
	testenv.Eventually(t, 30*time.Second, "d1 to report the daemon unreachable", func() error {
		if reported = f.Node("d1").Error; reported == "" {
			return fmt.Errorf("no error on node d1")
		}
		return nil
	})
	t.Logf("d1 reported %q %v after the daemon went away", reported, time.Since(down).Round(time.Millisecond))
	out, code := f.CLI("", "nodes")
	if code != 0 || !strings.Contains(out, "ERROR") || !strings.Contains(out, reported) {
		t.Errorf("dockfleet nodes: exit %d:\n%s\nwant an ERROR column with %q", code, out, reported)
	}

	proxy.open()
	testenv.Eventually(t, 30*time.Second, "d1's error to clear", func() error {
		if e := f.Node("d1").Error; e != "" {
			return fmt.Errorf("node d1 reports %q", e)
		}
		return nil
	})
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	f.WaitReconciled("d1", 30*time.Second) // as in TestAgentKilled
	w.check(t)
	if now := startTimes(t, f.Containers("d1")); !sameStarts(started, now) {
		t.Errorf("d1's containers (ID → started) went from %v to %v; want the same ones, never restarted", started, now)
	}
}
