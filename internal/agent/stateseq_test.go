package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestStaleStoreIsHeld covers a server whose store was restored from an
// older backup: its desired state, below the state sequence the agent
// applied, must change nothing (no container removed, replaced or
// started), across an agent restart too; one at or above it, or with no
// sequence (an older server), is applied.
func TestStaleStoreIsHeld(t *testing.T) {
	ctx := context.Background()
	rt := fakert.New()
	dir := t.TempDir()
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := newReconciler(rt, "node1", dir, time.Hour, clockwork.NewFakeClock(), log)

	mk := func(image string) []byte {
		b, err := json.Marshal(spec.Container{Image: image})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	inst := func(id, hash, image string) *agentproto.InstanceSpec {
		return &agentproto.InstanceSpec{Id: id, Project: "default", Deployment: "web", Revision: 1, SpecHash: hash, Container: mk(image)}
	}
	// containers maps each instance to its container, all running.
	containers := func() map[string]string {
		t.Helper()
		cs, err := rt.List(ctx, "node1")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, c := range cs {
			if !c.Running {
				t.Fatalf("container %s of %s is not running", c.ID, c.Labels[container.LabelInstance])
			}
			out[c.Labels[container.LabelInstance]] = c.ID
		}
		return out
	}

	// The live store at sequence 10: i1 and i2.
	if !r.setDesired(&agentproto.DesiredState{Generation: 1, StateSeq: 10, Instances: []*agentproto.InstanceSpec{
		inst("i1", "h1", "hello:v2"), inst("i2", "h2", "hello:v2")}}) {
		t.Fatal("the first desired state was not taken")
	}
	r.reconcile(ctx)
	before := containers()
	if len(before) != 2 {
		t.Fatalf("running %v; want i1 and i2", before)
	}

	// The restored store at sequence 7 knows i1 at an older spec, not i2,
	// and i3: all of it is held.
	stale := func(gen uint64, seq uint64) *agentproto.DesiredState {
		return &agentproto.DesiredState{Generation: gen, StateSeq: seq, Instances: []*agentproto.InstanceSpec{
			inst("i1", "h1-old", "hello:v1"), inst("i3", "h3", "hello:v1")}}
	}
	for gen := uint64(2); gen <= 3; gen++ {
		if r.setDesired(stale(gen, 7)) {
			t.Errorf("generation %d at state sequence 7 was taken by an agent at 10; want it held", gen)
		}
		r.reconcile(ctx)
	}
	if got := containers(); !maps.Equal(got, before) {
		t.Errorf("after a stale desired state: containers %v; want %v untouched (nothing removed, replaced or started)", got, before)
	}
	if applied, holding := r.stateSeq(); applied != 10 || holding != 7 {
		t.Errorf("stateSeq = %d, holding %d; want 10, holding 7", applied, holding)
	}
	if n := strings.Count(logs.String(), "holding: the server sent a desired state from an older store"); n != 1 {
		t.Errorf("the hold was warned of %d times; want once:\n%s", n, logs.String())
	}

	// A restarted agent remembers the sequence it applied, from its cache.
	r = newReconciler(rt, "node1", dir, time.Hour, clockwork.NewFakeClock(), log)
	if applied, _ := r.stateSeq(); applied != 10 {
		t.Fatalf("after a restart the agent's state sequence is %d; want 10, from its cache", applied)
	}
	if r.setDesired(stale(4, 7)) {
		t.Error("after a restart, a stale desired state was taken; want it held")
	}
	r.reconcile(ctx)
	if got := containers(); !maps.Equal(got, before) {
		t.Errorf("after a restart and a stale desired state: containers %v; want %v untouched", got, before)
	}

	// The operator's decision (accept-restore) sends it again above the
	// agent's sequence: now it rules.
	if !r.setDesired(stale(5, 12)) {
		t.Fatal("a desired state at 12, above the agent's 10, was held; want it applied")
	}
	r.reconcile(ctx)
	after := containers()
	if ids := slices.Sorted(maps.Keys(after)); !slices.Equal(ids, []string{"i1", "i3"}) || after["i1"] == before["i1"] {
		t.Errorf("after the decision: containers %v; want i1 replaced (was %s), i2 removed, i3 started", after, before["i1"])
	}
	if applied, holding := r.stateSeq(); applied != 12 || holding != 0 {
		t.Errorf("stateSeq = %d, holding %d; want 12, none", applied, holding)
	}

	// A server that sends no sequence (before protocol 3) is applied as
	// before, and the sequence applied stays.
	if !r.setDesired(&agentproto.DesiredState{Generation: 6, Instances: []*agentproto.InstanceSpec{inst("i3", "h3", "hello:v1")}}) {
		t.Fatal("a desired state with no sequence was held; want it applied")
	}
	r.reconcile(ctx)
	if ids := slices.Sorted(maps.Keys(containers())); !slices.Equal(ids, []string{"i3"}) {
		t.Errorf("after a desired state with no sequence: containers %v; want only i3", ids)
	}
	r = newReconciler(rt, "node1", dir, time.Hour, clockwork.NewFakeClock(), log)
	if applied, _ := r.stateSeq(); applied != 12 {
		t.Errorf("after a state with no sequence and a restart, the agent's sequence is %d; want 12 kept", applied)
	}
	if r.setDesired(stale(7, 11)) {
		t.Error("a desired state at 11 was taken by an agent at 12; want it held")
	}
}
