package controller

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// TestViewMirrorsStore checks that the controller's mirror of its own
// writes leaves the view as a fresh load from a real store would: if they
// drifted apart, placement and rollouts would act on instances that are
// not what the store (and the API) say.
func TestViewMirrorsStore(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	now := time.Now().UTC().Truncate(time.Millisecond)
	d := api.Deployment{Project: "default", Name: "web", Revision: 1, CreatedAt: now, UpdatedAt: now,
		Spec: spec.Deployment{APIVersion: spec.APIVersion, Kind: spec.KindDeployment, Metadata: spec.Metadata{Name: "web", Project: "default"},
			Spec: spec.DeploymentSpec{Mode: spec.ModeGlobal, Container: spec.Container{Image: "hello:v1"}}}}
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: d.Spec, Cause: "apply", CreatedAt: now}
	ro := api.Rollout{ID: "r1", Project: "default", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now}
	if _, err := st.ApplyRevision(ctx, d, rev, ro, nil); err != nil {
		t.Fatal(err)
	}
	mk := func(id, node string) api.Instance {
		return api.Instance{ID: id, Project: "default", Deployment: "web", NodeID: node, Revision: 1, SpecHash: "h1",
			State: api.InstancePending, CreatedAt: now, UpdatedAt: now, Version: 1}
	}

	v := newView()
	write := func(add []api.Instance, remove []string) {
		t.Helper()
		if err := st.ApplyPlacement(ctx, add, remove); err != nil {
			t.Fatal(err)
		}
		for _, in := range add {
			v.add(in)
		}
		for _, id := range remove {
			v.remove(id)
		}
	}
	write([]api.Instance{mk("i1", "a"), mk("i2", "b"), mk("i3", "c"), mk("i5", "e")}, nil)
	warn := func(msg string, args ...any) { t.Errorf("reload warned: %s %v", msg, args) }
	if err := v.reload(ctx, st, ReloadAll, warn); err != nil {
		t.Fatal(err)
	}

	at := now.Add(time.Second)
	statuses := []store.InstanceStatus{
		{ID: "i1", NodeID: "a", SpecHash: "h1", State: api.InstanceHealthy, ContainerID: "c1", ImageDigest: "hello@sha256:1", At: at},
		{ID: "i2", NodeID: "x", SpecHash: "h1", State: api.InstanceFailed, At: at},                   // another node's report: ignored
		{ID: "i3", NodeID: "c", SpecHash: "old", State: api.InstanceFailed, At: at},                  // an older spec's report: ignored
		{ID: "i3", NodeID: "c", State: api.InstanceStopped, Reason: "gone", At: at.Add(time.Second)}, // no hash: taken
		{ID: "i9", NodeID: "a", State: api.InstanceHealthy, At: at},                                  // unknown: ignored
	}
	ok, err := st.UpdateInstanceStatuses(ctx, statuses)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range statuses {
		if ok[i] {
			v.status(s)
		}
	}
	moves := []store.InstanceMove{{ID: "i1", Revision: 2, SpecHash: "h2"}}
	if ro, err = st.LatestRollout(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StepRollout(ctx, ro, moves, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range moves {
		v.move(m, time.Now())
	}
	write([]api.Instance{mk("i4", "d")}, []string{"i5"})

	fresh := newView()
	if err := fresh.reload(ctx, st, ReloadAll, warn); err != nil {
		t.Fatal(err)
	}
	if len(fresh.insts) != len(v.insts) {
		t.Errorf("view has %d instances, store %d", len(v.insts), len(fresh.insts))
	}
	for id, want := range fresh.insts {
		got := v.insts[id]
		if got == nil {
			t.Errorf("instance %s is in the store, not in the view", id)
			continue
		}
		g, w := *got, *want
		// A move's time is the store's clock, read a moment before the view's.
		if g.UpdatedAt.Sub(w.UpdatedAt).Abs() < time.Second {
			g.UpdatedAt = w.UpdatedAt
		}
		g.CreatedAt, w.CreatedAt = g.CreatedAt.UTC(), w.CreatedAt.UTC()
		g.UpdatedAt, w.UpdatedAt = g.UpdatedAt.UTC(), w.UpdatedAt.UTC()
		if !reflect.DeepEqual(g, w) {
			t.Errorf("instance %s:\n view  %+v\n store %+v", id, g, w)
		}
	}
	for k, m := range fresh.byNode {
		if len(v.byNode[k]) != len(m) {
			t.Errorf("node %s: view indexes %d instances, store has %d", k, len(v.byNode[k]), len(m))
		}
	}
	if got := v.deployment("default", "web"); len(got) != 4 || got[0].ID != "i1" || got[3].ID != "i4" {
		t.Errorf("deployment(web) = %d instances starting %v; want i1, i2, i3, i4 oldest first", len(got), got)
	}
	if len(v.byNode["e"]) != 0 {
		t.Errorf("removed instance i5 is still indexed under node e")
	}
}
