package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// TestNewDesiredStateReportsUnchangedInstancesAgain covers a rollout rolled
// back at once: the server moved an instance to revision 3 (forgetting
// its state) and back to 2 before the agent saw 3, so the agent gets a
// desired state that asks for what already runs. Unless it reports the
// instance again, the server waits for it forever.
func TestNewDesiredStateReportsUnchangedInstancesAgain(t *testing.T) {
	ctx := context.Background()
	r := newReconciler(fakert.New(), "node1", t.TempDir(), time.Hour, clockwork.NewFakeClock(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := json.Marshal(spec.Container{Image: "hello:v2"})
	if err != nil {
		t.Fatal(err)
	}
	desired := func(gen uint64) *agentproto.DesiredState {
		return &agentproto.DesiredState{Generation: gen, Instances: []*agentproto.InstanceSpec{
			{Id: "i1", Project: "default", Deployment: "web", Revision: 2, SpecHash: "h2", Container: c}}}
	}
	r.setDesired(desired(1))
	r.reconcile(ctx)
	sent := r.drainOutbox()
	if len(sent) != 1 || sent[0].State != string(api.InstanceRunning) || sent[0].SpecHash != "h2" {
		t.Fatalf("after the first desired state the agent reported %v; want i1 running with hash h2", sent)
	}
	if again := r.drainOutbox(); len(again) != 0 {
		t.Fatalf("reported %v again with nothing new", again)
	}

	r.setDesired(desired(3)) // generation 2, revision 3, never arrived
	r.reconcile(ctx)
	sent = r.drainOutbox()
	if len(sent) != 1 || sent[0].InstanceId != "i1" || sent[0].State != string(api.InstanceRunning) || sent[0].SpecHash != "h2" {
		t.Errorf("after a new desired state asking for what runs, the agent reported %v; want i1 running with hash h2 again", sent)
	}
}

// TestRestartAndHealAreReportedNotFailed covers the restart path: a
// container removed from outside is recreated, one that exits is restarted;
// neither is reported failed, and each is reported once as an event, with
// the restart count.
func TestRestartAndHealAreReportedNotFailed(t *testing.T) {
	ctx := context.Background()
	rt := fakert.New()
	r := newReconciler(rt, "node1", t.TempDir(), time.Hour, clockwork.NewFakeClock(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := json.Marshal(spec.Container{Image: "hello:v1"})
	if err != nil {
		t.Fatal(err)
	}
	r.setDesired(&agentproto.DesiredState{Generation: 1, Instances: []*agentproto.InstanceSpec{
		{Id: "i1", Project: "default", Deployment: "web", Revision: 1, SpecHash: "h1", Container: c}}})
	r.reconcile(ctx)
	r.drainOutbox()
	only := func() string {
		t.Helper()
		cs, err := rt.List(ctx, "node1")
		if err != nil || len(cs) != 1 {
			t.Fatalf("containers %+v (%v); want one", cs, err)
		}
		return cs[0].ID
	}

	steps := []struct {
		name     string
		act      func(id string) error
		event    string
		restarts uint32
	}{
		{"removed outside dockfleet", rt.Delete, "removed outside dockfleet, recreated", 0},
		{"exited", func(id string) error { return rt.Kill(id, 137) }, "exited 137, restarted", 1},
	}
	for _, s := range steps {
		if err := s.act(only()); err != nil {
			t.Fatal(err)
		}
		r.reconcile(ctx)
		sent := r.drainOutbox()
		if len(sent) != 1 || sent[0].State != string(api.InstanceRunning) || len(sent[0].Events) != 1 || sent[0].Events[0] != s.event ||
			sent[0].Restarts != s.restarts {
			t.Fatalf("%s: reported %v; want i1 running, event %q, %d restarts", s.name, sent, s.event, s.restarts)
		}
		if cs, _ := rt.List(ctx, "node1"); len(cs) != 1 || !cs[0].Running {
			t.Fatalf("%s: containers %+v; want one running", s.name, cs)
		}
		r.reconcile(ctx)
		if again := r.drainOutbox(); len(again) != 0 {
			t.Fatalf("%s: reported %v again with nothing new", s.name, again)
		}
	}
}
