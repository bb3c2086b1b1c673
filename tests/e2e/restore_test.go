package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestRestoreOlderBackupDestroysNothingUndecided restores yesterday's
// backup under a fleet that moved on: a deployment applied since (api) and
// a newer revision of another (web at v2). The restored server must not
// have the agents remove or replace those containers: they keep running,
// the same containers, and the nodes say they are held. Only the
// operator's 'dockfleet store accept-restore' lets the restored state rule:
// api removed, web back to the backed-up revision.
func TestRestoreOlderBackupDestroysNothingUndecided(t *testing.T) {
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	nodes := []string{"a1", "a2"}
	f.AddAgents([2]string{"a1", "role=web"}, [2]string{"a2", "role=web"})
	update := "    batchSize: 2\n"

	f.Apply(harness.WebSpec("hello:v1", 1, update))
	f.WaitRollout("web", 60*time.Second)
	f.WaitHealthy("web", 2, 30*time.Second)

	dataDir := filepath.Join(f.Dir, "server")
	backup := filepath.Join(t.TempDir(), "dockfleet-backup.db")
	out, code := f.CLI("", "store", "backup", "--data-dir", dataDir, "--out", backup)
	if code != 0 {
		t.Fatalf("store backup: exit %d: %s", code, out)
	}
	for _, want := range []string{"Backed up", "key file", filepath.Join(dataDir, "store.key")} {
		if !strings.Contains(out, want) {
			t.Errorf("store backup said %q; want it to mention %q", out, want)
		}
	}
	if out, code := f.CLI("", "store", "backup", "--data-dir", dataDir, "--out", backup); code == 0 || !strings.Contains(out, "exists") {
		t.Errorf("a second backup to the same file: exit %d, %q; want a refusal saying it exists", code, out)
	}

	// The fleet moves on: api is deployed, web goes to v2.
	f.Apply(strings.Replace(harness.WebSpec("hello:v1", 1, update), "name: web", "name: api", 1))
	f.WaitRollout("api", 60*time.Second)
	f.WaitHealthy("api", 2, 30*time.Second)
	f.Apply(harness.WebSpec("hello:v2", 2, update))
	if ro := f.WaitRollout("web", 60*time.Second); ro.To != 2 {
		t.Fatalf("web's rollout went to revision %d; want 2", ro.To)
	}
	f.WaitHealthy("web", 2, 30*time.Second)
	before := map[string]map[string]string{} // node → container ID → image
	startedBefore := map[string]string{}     // container ID → start time
	for _, n := range nodes {
		before[n] = runningOn(t, f, n, startedBefore)
		if len(before[n]) != 2 {
			t.Fatalf("node %s runs %v; want web and api", n, before[n])
		}
	}

	// Restore the backup the documented way.
	f.Server.Stop()
	db := filepath.Join(dataDir, "dockfleet.db")
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(db + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	f.StartServer()

	// Each agent gets the restored, older state and holds: it says so,
	// the node says so, and nothing it runs changes.
	for _, n := range nodes {
		agent := f.Agents[n]
		testenv.Eventually(t, 30*time.Second, "agent "+n+" to hold the restored server's desired state", func() error {
			if !strings.Contains(agent.Out.String(), "holding: the server sent a desired state from an older store") {
				return fmt.Errorf("no hold logged yet")
			}
			return nil
		})
		testenv.Eventually(t, 30*time.Second, "node "+n+" to show held", func() error {
			if e := f.Node(n).Error; !strings.Contains(e, "held: the agent has applied state") || !strings.Contains(e, "dockfleet store accept-restore") {
				return fmt.Errorf("node error %q", e)
			}
			return nil
		})
		f.WaitReconciled(n, 30*time.Second)
	}
	startedAfter := map[string]string{}
	for _, n := range nodes {
		if got := runningOn(t, f, n, startedAfter); !maps.Equal(got, before[n]) {
			t.Errorf("node %s after the restore runs %v; want %v: the same containers, none removed, replaced or restarted", n, got, before[n])
		}
	}
	if !maps.Equal(startedAfter, startedBefore) {
		t.Errorf("container start times after the restore %v; want %v: none restarted", startedAfter, startedBefore)
	}
	if !strings.Contains(f.Server.Out.String(), "node held") {
		t.Errorf("the server logged no warning of held nodes")
	}
	if out, _ := f.CLI("", "nodes"); strings.Count(out, "held: the agent has applied state") != 2 {
		t.Errorf("dockfleet nodes shows %q; want both nodes held", out)
	}

	// The decision: the restored state rules.
	out, code = f.CLI("", "store", "accept-restore")
	if code != 0 || !strings.Contains(out, "Accepted the restored state") || !strings.Contains(out, "Nodes that were held: 2") {
		t.Fatalf("store accept-restore: exit %d, %q; want it accepted for 2 held nodes", code, out)
	}
	for _, n := range nodes {
		testenv.Eventually(t, 60*time.Second, "node "+n+" to run the restored state", func() error {
			got := runningOn(t, f, n, nil)
			if len(got) != 1 {
				return fmt.Errorf("runs %v", got)
			}
			for id, image := range got {
				if image != "web hello:v1" || before[n][id] != "" {
					return fmt.Errorf("runs %v; want a new container of web on hello:v1", got)
				}
			}
			if e := f.Node(n).Error; e != "" {
				return fmt.Errorf("node error %q", e)
			}
			return nil
		})
	}
	f.WaitHealthy("web", 2, 30*time.Second)
	if out, code := f.CLI("", "store", "accept-restore"); code != 0 || !strings.Contains(out, "Nothing is held") {
		t.Errorf("a second accept-restore: exit %d, %q; want it to change nothing", code, out)
	}
}

// runningOn maps the running containers of node's agent to "deployment
// image", and records when each started in started: a container restarted
// in place keeps its ID, not its start time.
func runningOn(t *testing.T, f *harness.Fleet, node string, started map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range f.Containers(node) {
		if c.State != "running" {
			continue
		}
		out[c.ID] = c.Labels[container.LabelDeployment] + " " + c.Image
		if started != nil {
			res, err := testenv.SDK(t).ContainerInspect(context.Background(), c.ID, client.ContainerInspectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			started[c.ID] = res.Container.State.StartedAt
		}
	}
	return out
}
