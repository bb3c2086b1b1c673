package server

import (
	"context"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

// TestRestartGivesNodesTimeToReconnect: a restarted server must not call a
// node unreachable (and move its replicated instances) only because the
// node has not reconnected yet; a large fleet takes a minute to come back.
func TestRestartGivesNodesTimeToReconnect(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(t, Config{DataDir: dir, HeartbeatInterval: 10 * time.Millisecond})
	first, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := first.CreateEnrollToken(ctx, api.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour).UTC()
	node := api.Node{ID: "n1", Name: "edge-1", Labels: map[string]string{}, State: api.NodeReady, LastSeen: hourAgo, CreatedAt: hourAgo}
	if _, err := first.store.Enroll(ctx, tok.ID, func(api.EnrollToken, string, *api.Node) error { return nil }, node); err != nil {
		t.Fatal(err)
	}
	first.Close()

	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	state := func() api.NodeState {
		n := api.Node{ID: "n1"}
		s.fleet.live(&n)
		return n.State
	}
	time.Sleep(100 * time.Millisecond) // more than 3 heartbeat intervals
	s.fleet.checkLiveness(ctx)
	if got := state(); got != api.NodeReady {
		t.Fatalf("a liveness window after the restart the node is %s; want ready until the restart grace has passed", got)
	}
	s.fleet.mu.Lock()
	// Silence counts from the end of the grace: a liveness window past it.
	s.fleet.nodes["n1"].grace = time.Now().Add(-time.Minute)
	s.fleet.mu.Unlock()
	s.fleet.checkLiveness(ctx)
	if got := state(); got != api.NodeUnreachable {
		t.Errorf("after the grace, silent since an hour ago, the node is %s; want unreachable", got)
	}
}
