package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// TestStateSeqHoldAndAccept follows the state sequence through a restore:
// desired states carry the store's; an agent ahead of it makes its node
// held and freezes what is sent, so that writes made on the restored store
// cannot overtake the agent; accepting the restore sends every node its
// state again above every agent's.
func TestStateSeqHoldAndAccept(t *testing.T) {
	w := newWorld(t, "a", "b")
	w.apply("hello:v1", 0)
	for i := 0; w.rollout().State != api.RolloutSucceeded; i++ {
		if i == 10 {
			t.Fatalf("the rollout is %s after %d passes", w.rollout().State, i)
		}
		w.pass()
		w.report()
	}
	w.pass()
	seq := func() store.StateSeq {
		t.Helper()
		q, err := w.st.StateSeq(w.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	s1 := seq().Seq
	sent := func() []uint64 {
		var out []uint64
		for _, id := range w.nodes {
			out = append(out, w.out.Desired(id).GetStateSeq())
		}
		return out
	}
	// Each node was last sent its state when its instance last moved, with
	// the sequence read after that move: above 0, the last one the store's.
	if got := sent(); slices.Contains(got, 0) || slices.Max(got) != s1 {
		t.Fatalf("desired states carry state sequences %v; want each above 0, the newest the store's %d", got, s1)
	}
	if held := w.c.AgentStateSeq(w.ctx, "a", s1); held != "" {
		t.Errorf("an agent at the store's sequence is held: %q", held)
	}

	// The store was restored: b's agent applied 5 more changes than it has.
	held := w.c.AgentStateSeq(w.ctx, "b", s1+5)
	want := fmt.Sprintf("held: the agent has applied state %d but this server's store is at %d", s1+5, s1)
	if !strings.HasPrefix(held, want) || !strings.Contains(held, "dockfleet store accept-restore") {
		t.Errorf("node b's hold text is %q; want it to start %q and name the decision", held, want)
	}
	if evs, _ := w.st.ListEvents(w.ctx, store.EventFilter{Project: api.DefaultProject}); !slices.ContainsFunc(evs, func(e api.Event) bool {
		return e.Type == "node.held" && strings.Contains(e.Message, "node b")
	}) {
		t.Errorf("no node.held event for b in %+v", evs)
	}

	// Writes on the restored store raise its sequence past the agent's,
	// but what it sends stays below it.
	for i := range 10 {
		if err := w.st.ApplyPlacement(w.ctx, []api.Instance{{ID: fmt.Sprintf("x%d", i), Project: api.DefaultProject, Deployment: "other", NodeID: "z"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := w.out.Desired("a").Generation
	w.apply("hello:v2", 0)
	w.pass()
	if q := seq(); q.Seq <= s1+5 {
		t.Fatalf("the store's sequence is %d after 10 writes; want past the agent's %d for this test to mean anything", q.Seq, s1+5)
	}
	if d := w.out.Desired("a"); d.Generation == before || d.Instances[0].Revision != 2 || d.StateSeq != s1 {
		t.Errorf("while b is held, a is sent revision %d at sequence %d (generation %d, was %d); want revision 2 sent at %d, frozen below b's %d",
			d.Instances[0].Revision, d.StateSeq, d.Generation, before, s1, s1+5)
	}
	if again := w.c.AgentStateSeq(w.ctx, "b", s1+5); again != held {
		t.Errorf("b's next heartbeat: hold text %q; want %q", again, held)
	}

	// The decision.
	gens := []uint64{w.out.Desired("a").Generation, w.out.Desired("b").Generation}
	res, err := w.c.AcceptRestore(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || res.From != s1 || res.To <= seq().Seq-1 || res.To <= s1+5 || !slices.Equal(res.Nodes, []string{"b"}) {
		t.Errorf("AcceptRestore = %+v; want accepted from %d to above both the store's and b's sequences, node b", res, s1)
	}
	w.pass()
	for i, id := range w.nodes {
		d := w.out.Desired(id)
		// The pass may step the rollout too, raising the sequence further.
		if d.StateSeq < res.To || d.Generation <= gens[i] {
			t.Errorf("after accepting, node %s's desired state: sequence %d, generation %d (was %d); want %d or above, sent again", id, d.StateSeq, d.Generation, gens[i], res.To)
		}
	}
	if held := w.c.AgentStateSeq(w.ctx, "b", s1+5); held != "" {
		t.Errorf("after accepting, b is still held: %q", held)
	}
	if res, err := w.c.AcceptRestore(w.ctx); err != nil || res.Accepted {
		t.Errorf("a second AcceptRestore = %+v, %v; want nothing done", res, err)
	}
}
