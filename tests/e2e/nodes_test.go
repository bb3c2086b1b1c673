package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestNodeRevokeAndRemove revokes and removes real agents with the CLI: a
// revoked agent is cut off and told why, a connected one is removed only
// with --force.
func TestNodeRevokeAndRemove(t *testing.T) {
	testenv.RequireDocker(t)
	f := harness.NewFleet(t)
	f.AddAgents([2]string{"keep", ""}, [2]string{"gone", ""})

	if out, code := f.CLI("", "node", "revoke", "keep"); code != 0 || out != "node/keep revoked\n" {
		t.Fatalf("node revoke: exit %d: %q", code, out)
	}
	f.WaitNodeState("keep", api.NodeRevoked, 5*time.Second)
	testenv.Eventually(t, 20*time.Second, "the revoked agent to say why it cannot connect", func() error {
		if out := f.Agents["keep"].Out.String(); !strings.Contains(out, "revoked or removed") {
			return errors.New("not yet")
		}
		return nil
	})

	out, code := f.CLI("", "node", "rm", "gone")
	if code != 1 || !strings.Contains(out, "--force") {
		t.Errorf("node rm of a connected node: exit %d: %q; want 1, naming --force", code, out)
	}
	if out, code := f.CLI("", "node", "rm", "gone", "--force"); code != 0 {
		t.Fatalf("node rm --force: exit %d: %q", code, out)
	}
	if _, err := f.Client.GetNode(context.Background(), "gone"); !client.IsNotFound(err) {
		t.Errorf("the removed node: %v; want not found", err)
	}
	testenv.Eventually(t, 20*time.Second, "the removed agent to say why it cannot connect", func() error {
		if out := f.Agents["gone"].Out.String(); !strings.Contains(out, "revoked or removed") {
			return errors.New("not yet")
		}
		return nil
	})
}
