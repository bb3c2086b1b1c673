package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// TestSameDesiredStateFiftyTimes delivers one desired state 50 times, as a
// server resending it (reconnects, restarts) would: each delivery is
// reconciled, and not one container is stopped, replaced or restarted.
func TestSameDesiredStateFiftyTimes(t *testing.T) {
	ctx := context.Background()
	rt := fakert.New()
	r := newReconciler(rt, "node1", t.TempDir(), time.Hour, clockwork.NewFakeClock(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	d := redeliveryState(t, 7, 2, "h2")
	r.setDesired(d)
	r.reconcile(ctx)
	before := containerStarts(t, rt)
	for k := 1; k <= 50; k++ {
		r.setDesired(redeliveryState(t, 7, 2, "h2"))
		r.reconcile(ctx)
		if now := containerStarts(t, rt); now != before {
			t.Fatalf("delivery %d of the same desired state changed the containers from %s to %s; want none stopped or restarted", k, before, now)
		}
	}
}

// redeliveryState is generation gen of a desired state of three instances
// of deployment web at revision rev, with spec hash hash.
func redeliveryState(t *testing.T, gen uint64, rev int64, hash string) *agentproto.DesiredState {
	t.Helper()
	c, err := json.Marshal(spec.Container{Image: "hello:v1"})
	if err != nil {
		t.Fatal(err)
	}
	d := &agentproto.DesiredState{Generation: gen}
	for i := 1; i <= 3; i++ {
		d.Instances = append(d.Instances, &agentproto.InstanceSpec{Id: fmt.Sprintf("i%d", i), Project: "default",
			Deployment: "web", Revision: rev, SpecHash: hash, Container: c})
	}
	return d
}

// containerStarts shows the node's containers as "ID running startedAt", in
// the runtime's order, for comparison.
func containerStarts(t *testing.T, rt *fakert.Runtime) string {
	t.Helper()
	cs, err := rt.List(context.Background(), "node1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 0 {
		t.Fatal("the node runs no container")
	}
	out := ""
	for _, c := range cs {
		out += fmt.Sprintf("[%s %v %s] ", c.ID, c.Running, c.StartedAt.Format(time.RFC3339Nano))
	}
	return out
}

// TestOlderGenerationIgnored delivers generation 8 (revision 2) and then,
// late, generation 7 of an older revision on the same stream: the agent
// keeps what generation 8 asked for and stops or replaces no container. On
// a new stream (a restarted server may count from lower) it takes any.
func TestOlderGenerationIgnored(t *testing.T) {
	ctx := context.Background()
	rt := fakert.New()
	r := newReconciler(rt, "node1", t.TempDir(), time.Hour, clockwork.NewFakeClock(), slog.New(slog.DiscardHandler))
	r.newStream()
	if !r.setDesired(redeliveryState(t, 8, 2, "h2")) {
		t.Fatal("the first desired state was ignored")
	}
	r.reconcile(ctx)
	before := containerStarts(t, rt)
	if r.setDesired(redeliveryState(t, 7, 1, "h1")) {
		t.Error("generation 7 after 8 on one stream was taken")
	}
	r.reconcile(ctx)
	if now := containerStarts(t, rt); now != before {
		t.Fatalf("generation 7 after 8 changed the containers from %s to %s; want none stopped or replaced", before, now)
	}
	r.newStream()
	if !r.setDesired(redeliveryState(t, 7, 1, "h1")) {
		t.Error("generation 7 on a new stream was ignored")
	}
}
