package storetest

import (
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// testStateSeq checks that every write changing what a node should run
// raises the state sequence, that other writes leave it, and the hold
// that a restored store's agents put it in.
func testStateSeq(t *testing.T, s store.Store) {
	seq := func() store.StateSeq {
		t.Helper()
		q, err := s.StateSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	q := seq()
	if q.Seq == 0 || q.Held != 0 || q.Ahead != 0 || q.Sent() != q.Seq {
		t.Fatalf("new store: %+v; want a sequence above 0 (0 means a server that sends none), nothing held", q)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t1", CreatedAt: now}, "h"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, "t1", func(api.EnrollToken, string, *api.Node) error { return nil }, newNode("n1", "edge-1")); err != nil {
		t.Fatal(err)
	}
	d := newDeployment("default", "web")
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: d.Spec, CreatedAt: now}
	ro := api.Rollout{ID: "r1", Project: "default", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now}
	inst := api.Instance{ID: "i1", Project: "default", Deployment: "web", NodeID: "n1", Revision: 1, SpecHash: "h1", State: api.InstancePending, CreatedAt: now}

	writes := []struct {
		name  string
		raise bool
		write func() error
	}{
		{"ApplyRevision (no instance moves)", false, func() error { _, err := s.ApplyRevision(ctx, d, rev, ro, nil); return err }},
		{"ApplyPlacement", true, func() error { return s.ApplyPlacement(ctx, []api.Instance{inst}, nil) }},
		{"UpdateInstanceStatus", false, func() error {
			return s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "i1", NodeID: "n1", State: api.InstanceHealthy, At: now})
		}},
		{"SetInstanceRevision", true, func() error { return s.SetInstanceRevision(ctx, []string{"i1"}, 1, "h1b") }},
		{"StepRollout without moves", false, func() error {
			r, err := s.LatestRollout(ctx, "default", "web")
			if err == nil {
				_, err = s.StepRollout(ctx, r, nil, nil, nil)
			}
			return err
		}},
		{"StepRollout moving an instance", true, func() error {
			r, err := s.LatestRollout(ctx, "default", "web")
			if err == nil {
				_, err = s.StepRollout(ctx, r, []store.InstanceMove{{ID: "i1", Revision: 1, SpecHash: "h1"}}, nil, nil)
			}
			return err
		}},
		{"SetSeen", false, func() error { return s.SetSeen(ctx, map[string]store.Seen{"n1": {At: now}}) }},
		{"DeleteDeployment", true, func() error { return s.DeleteDeployment(ctx, "default", "web") }},
		{"DeleteNode", true, func() error { return s.DeleteNode(ctx, "n1", "test", now) }},
	}
	for _, w := range writes {
		before := seq().Seq
		if err := w.write(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		after := seq().Seq
		if w.raise && after <= before {
			t.Errorf("%s: state sequence %d → %d; want it raised", w.name, before, after)
		}
		if !w.raise && after != before {
			t.Errorf("%s: state sequence %d → %d; want it unchanged (what nodes run did not change)", w.name, before, after)
		}
	}

	// An agent at or below what the store sends holds nothing.
	base := seq()
	if q, err := s.HoldStateSeq(ctx, base.Seq); err != nil || q != base {
		t.Errorf("HoldStateSeq(%d) with the store at %d = %+v, %v; want nothing held", base.Seq, base.Seq, q, err)
	}
	// An agent ahead of it freezes what the store sends.
	q, err := s.HoldStateSeq(ctx, base.Seq+5)
	if err != nil || q.Held != base.Seq || q.Ahead != base.Seq+5 || q.Sent() != base.Seq {
		t.Fatalf("HoldStateSeq(%d) with the store at %d = %+v, %v; want held at %d, ahead %d", base.Seq+5, base.Seq, q, err, base.Seq, base.Seq+5)
	}
	// Writes made since raise Seq but not what is sent, even past the agent's.
	for i := range 7 {
		if err := s.ApplyPlacement(ctx, []api.Instance{{ID: "x" + string(rune('a'+i)), Project: "default", Deployment: "db", NodeID: "n2", CreatedAt: now}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if q := seq(); q.Seq <= base.Seq+5 || q.Sent() != base.Seq || q.Ahead != base.Seq+5 {
		t.Errorf("after 7 placements while held: %+v; want Seq past %d, still sending %d", q, base.Seq+5, base.Seq)
	}
	if q, err := s.HoldStateSeq(ctx, base.Seq+3); err != nil || q.Ahead != base.Seq+5 || q.Held != base.Seq {
		t.Errorf("HoldStateSeq(lower) = %+v, %v; want ahead kept at %d", q, err, base.Seq+5)
	}
	// The decision ends the hold with a sequence above every agent's.
	cur := seq().Seq
	q, err = s.RaiseStateSeq(ctx, cur+100)
	if err != nil || q.Seq != cur+100 || q.Held != 0 || q.Ahead != 0 || q.Sent() != cur+100 {
		t.Errorf("RaiseStateSeq(%d) = %+v, %v; want %d sent, nothing held", cur+100, q, err, cur+100)
	}
	if q, err := s.RaiseStateSeq(ctx, 3); err != nil || q.Seq != cur+100 {
		t.Errorf("RaiseStateSeq(3) = %+v, %v; want the sequence kept at %d: it never goes down", q, err, cur+100)
	}
}
