package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/store/storetest"
)

// world is a controller over a real SQLite store, with its liveness
// registry and fan-out, on a fake clock. The test is the controller's run
// goroutine: it calls pass and report itself, so each step is exact.
type world struct {
	t     *testing.T
	ctx   context.Context
	clock *clockwork.FakeClock
	st    store.Store
	c     *Controller
	out   *fanout.Fanout
	nodes []string
}

func newWorld(t *testing.T, nodes ...string) *world {
	t.Helper()
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	var ns []api.Node
	for _, id := range nodes {
		ns = append(ns, api.Node{ID: id, Name: id, Labels: map[string]string{}, State: api.NodeReady, LastSeen: clock.Now(), CreatedAt: clock.Now()})
	}
	st := storetest.SQLiteWithNodes(t, ns...)
	live, err := liveness.New(ctx, st, liveness.Config{HeartbeatInterval: 5 * time.Second, MissedHeartbeats: 3, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	out := fanout.New(clock)
	c := New(st, live, out, Config{RescheduleAfter: time.Minute, PrePullParallelism: 50, ImagePolicy: spec.ImagePolicyUnpinned, Clock: clock})
	return &world{t: t, ctx: ctx, clock: clock, st: st, c: c, out: out, nodes: nodes}
}

// apply stores a new revision of global deployment web running image,
// one node at a time, each healthy for minHealthy, as the API would.
func (w *world) apply(image string, minHealthy time.Duration) {
	w.t.Helper()
	w.write(image, fmt.Sprintf("{batchSize: 1, minHealthyTime: %s}", minHealthy))
	w.c.Need(ReloadDeployments | Place)
}

// write stores a new revision of global deployment web running image with
// the update strategy update (YAML), and its rollout, as the API would,
// but does not tell the controller.
func (w *world) write(image, update string) {
	w.t.Helper()
	doc := fmt.Sprintf("apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  mode: global\n"+
		"  container: {image: %q}\n  update: %s\n", image, update)
	ds, err := spec.Parse("web.yaml", []byte(doc))
	if err != nil {
		w.t.Fatal(err)
	}
	now := w.clock.Now()
	cur, err := w.st.GetDeployment(w.ctx, api.DefaultProject, "web")
	if errors.Is(err, store.ErrNotFound) {
		cur, err = api.Deployment{Project: api.DefaultProject, Name: "web", CreatedAt: now}, nil
	}
	if err != nil {
		w.t.Fatal(err)
	}
	cur.Spec, cur.Revision, cur.UpdatedAt = ds[0], cur.Revision+1, now
	rev := api.Revision{Project: cur.Project, Deployment: cur.Name, Number: cur.Revision, Spec: ds[0], Cause: "apply", CreatedAt: now}
	ro := api.Rollout{ID: NewID(), Project: cur.Project, Deployment: cur.Name, From: cur.StableRevision, To: rev.Number,
		State: api.RolloutRunning, CreatedAt: now, UpdatedAt: now}
	if _, err := w.st.ApplyRevision(w.ctx, cur, rev, ro, nil); err != nil {
		w.t.Fatal(err)
	}
}

// pass runs one controller pass.
func (w *world) pass() {
	w.t.Helper()
	if err := w.c.schedule(w.ctx); err != nil {
		w.t.Fatal(err)
	}
}

// report has every node report each instance of its desired state running
// now, through the controller's status queue, and records the batch.
func (w *world) report() {
	w.t.Helper()
	for _, id := range w.nodes {
		for _, in := range w.out.Desired(id).GetInstances() {
			w.c.Status(w.ctx, id, &agentproto.InstanceStatus{InstanceId: in.Id, SpecHash: in.SpecHash, State: string(api.InstanceRunning)})
		}
	}
	var batch []store.InstanceStatus
	for len(w.c.statuses) > 0 {
		batch = append(batch, <-w.c.statuses)
	}
	w.c.record(w.ctx, batch)
}

// revisions lists the revision each node is asked to run, in node order.
func (w *world) revisions() []int64 {
	var revs []int64
	for _, id := range w.nodes {
		d := w.out.Desired(id)
		if d == nil || len(d.Instances) != 1 {
			w.t.Fatalf("node %s is asked to run %v; want one instance of web", id, d.GetInstances())
		}
		revs = append(revs, d.Instances[0].Revision)
	}
	return revs
}

func (w *world) rollout() api.Rollout {
	w.t.Helper()
	ro, err := w.st.LatestRollout(w.ctx, api.DefaultProject, "web")
	if err != nil {
		w.t.Fatal(err)
	}
	return ro
}

// Statuses in, desired states out: a rollout over two nodes, one at a
// time, moves to the next node only once the first has been healthy for
// minHealthyTime on the controller's clock, and not a moment before.
func TestRolloutStepsOnTheClock(t *testing.T) {
	const minHealthy = 10 * time.Second
	w := newWorld(t, "a", "b")
	w.apply("hello:v1", minHealthy)
	// Revision 1 goes out from nothing; run it to its end.
	for i := 0; w.rollout().State != api.RolloutSucceeded; i++ {
		if i == 10 {
			t.Fatalf("the first rollout is %s (%s) after %d passes; want succeeded", w.rollout().State, w.rollout().Message, i)
		}
		w.pass()
		w.report()
		w.clock.Advance(minHealthy)
	}
	w.pass()
	if got := w.revisions(); !slices.Equal(got, []int64{1, 1}) {
		t.Fatalf("after the first rollout nodes run revisions %v; want [1 1]", got)
	}

	w.apply("hello:v2", minHealthy)
	var first time.Time // when the first moved instance reported running
	for _, step := range []struct {
		name    string
		advance time.Duration // before the pass
		report  bool          // after the pass
		// moved is how many nodes are asked to run revision 2.
		moved int
		state api.RolloutState
	}{
		{"apply", 0, true, 1, api.RolloutRunning},
		{"just healthy", 0, false, 1, api.RolloutRunning},
		{"a second short of minHealthyTime", minHealthy - time.Second, false, 1, api.RolloutRunning},
		{"a nanosecond short", time.Second - time.Nanosecond, false, 1, api.RolloutRunning},
		{"minHealthyTime passed", time.Nanosecond, true, 2, api.RolloutRunning},
		{"second node healthy long enough", minHealthy, false, 2, api.RolloutSucceeded},
	} {
		w.clock.Advance(step.advance)
		w.pass()
		if step.report {
			w.report()
			if first.IsZero() {
				first = w.clock.Now()
			}
		}
		moved := 0
		for _, r := range w.revisions() {
			if r == 2 {
				moved++
			}
		}
		if ro := w.rollout(); moved != step.moved || ro.State != step.state {
			t.Fatalf("%s (%s after the first node ran revision 2): %d nodes asked to run revision 2, rollout %s (%s); want %d, %s",
				step.name, w.clock.Since(first), moved, ro.State, ro.Message, step.moved, step.state)
		}
	}
}

// A rollout waiting for minHealthyTime sets the controller's timer, which
// asks for a pass when the fake clock reaches it.
func TestRolloutWaitTriggersAPass(t *testing.T) {
	const minHealthy = 10 * time.Second
	w := newWorld(t, "a")
	w.apply("hello:v1", minHealthy)
	w.pass()
	w.report()
	<-w.c.wake // drain what the inputs asked for
	w.pass()
	select {
	case <-w.c.wake:
		t.Fatal("a pass was asked for before minHealthyTime passed")
	default:
	}
	w.clock.Advance(minHealthy)
	select { // the timer's function runs on a goroutine of its own
	case <-w.c.wake:
	case <-time.After(time.Minute):
		t.Fatalf("no pass asked for when minHealthyTime passed (rollout: %s)", w.rollout().Message)
	}
}

// A revision applied after a pass read the deployments, but before it
// read the active rollouts (on several replicas: before the leader heard
// of the apply), is rolled out by its own update strategy once the
// controller has read it, never by the one of the revision before. A
// 40,000-node benchmark once moved every instance in one batch so.
func TestARolloutNewerThanTheViewWaitsForItsRevision(t *testing.T) {
	w := newWorld(t, "a", "b", "c", "d")
	w.write("hello:v1", "{batchSize: 100%, maxUnavailable: 100%, minHealthyTime: 0s}")
	w.c.Need(ReloadDeployments | Place)
	for i := 0; w.rollout().State != api.RolloutSucceeded; i++ {
		if i == 10 {
			t.Fatalf("the first rollout is %s (%s) after %d passes; want succeeded", w.rollout().State, w.rollout().Message, i)
		}
		w.pass()
		w.report()
	}
	w.pass()

	// Revision 2 comes a second later (the latest rollout is its), and
	// the controller does not hear of it.
	w.clock.Advance(time.Second)
	w.write("hello:v2", "{batchSize: 1, minHealthyTime: 0s}")
	rev2, err := w.st.GetRevision(w.ctx, api.DefaultProject, "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	// moved counts the instances moved to revision 2. Each must carry its
	// spec hash, or the store ignores every status its agent reports.
	moved := func() int {
		insts, err := w.st.ListInstances(w.ctx, store.InstanceFilter{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, in := range insts {
			if in.Revision != 2 {
				continue
			}
			n++
			if want := SpecHash(rev2.Spec.Spec.Container); in.SpecHash != want {
				t.Fatalf("instance %s moved to revision 2 with spec hash %q; want %q", in.ID, in.SpecHash, want)
			}
		}
		return n
	}
	// The first pass may step the rollout or wait for its revision; by the
	// second, one batch of one instance is out, and no more.
	for i := range 3 {
		w.pass()
		if n := moved(); n > 1 || i > 0 && n != 1 {
			t.Fatalf("pass %d after the unannounced apply: %d of 4 instances moved to revision 2 (rollout: %s); want 1 (batchSize: 1)",
				i+1, n, w.rollout().Message)
		}
	}
	if got := w.rollout(); got.Batch != 1 || got.Batches != 4 {
		t.Fatalf("the rollout is at batch %d of %d; want 1 of 4", got.Batch, got.Batches)
	}
}

// sendStatuses reports instances i0 … i(n-1) of node n1 running, from
// another goroutine; the channel closes once every call returned.
func (w *world) sendStatuses(n int) <-chan struct{} {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			w.c.Status(context.Background(), "n1", &agentproto.InstanceStatus{InstanceId: fmt.Sprint("i", i), State: string(api.InstanceRunning),
				ObservedAt: w.clock.Now().UnixNano()})
		}
	}()
	return sent
}

// cluster is a Cluster that leads while leads is true and records what
// it is given for the leader.
type cluster struct {
	mu      sync.Mutex
	leads   bool
	reports []*agentproto.AgentMessage
}

func (f *cluster) Leading() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.leads }
func (f *cluster) Forward(Work)  {}
func (f *cluster) Report(_ string, m *agentproto.AgentMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, m)
}

// A leader whose run ended (its lease lost) hands the status reports it
// is still given to the next leader, however many come before its
// replica knows it no longer leads: none is dropped, and none blocks the
// agent's stream that carries it (a stream stuck there stops taking
// heartbeats, and its node is taken for lost).
func TestStatusesAfterTheLeadersRunEndedGoToTheNextLeader(t *testing.T) {
	w := newWorld(t, "n1")
	fc := &cluster{leads: true}
	w.c.cfg.Cluster = fc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.c.Run(ctx); close(done) }()
	cancel()
	<-done
	const n = 5000 // more than the queue holds
	sent := w.sendStatuses(n)
	select {
	case <-sent:
	case <-time.After(30 * time.Second):
		t.Fatal("Status blocked after the leader's run ended")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.reports) != n {
		t.Fatalf("%d status reports handed to the next leader; want all %d", len(fc.reports), n)
	}
	if st := fc.reports[n-1].GetStatus(); st.GetInstanceId() != fmt.Sprint("i", n-1) || st.GetState() != string(api.InstanceRunning) {
		t.Errorf("last report handed over: %+v; want i%d running", st, n-1)
	}
}

// A replica that has just taken the lease and not yet begun its
// controller's run hands agents' statuses, however many, through the store,
// as one whose run ended does: its term may end before the run begins (in a
// 40,000-agent run a leader lost its lease while it read the nodes, and the
// 1,259 statuses queued for its run were never written). Nothing blocks.
func TestStatusesBeforeALeadersRunGoThroughTheStore(t *testing.T) {
	w := newWorld(t, "n1")
	fc := &cluster{leads: true}
	w.c.cfg.Cluster = fc
	const n = 5000 // more than the queue holds
	sent := w.sendStatuses(n)
	select {
	case <-sent:
	case <-time.After(30 * time.Second):
		t.Fatal("Status blocked before the leader's run began")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.reports) != n {
		t.Fatalf("%d status reports handed over; want all %d", len(fc.reports), n)
	}
	if len(w.c.statuses) != 0 {
		t.Errorf("%d statuses queued for a run that may never begin", len(w.c.statuses))
	}
}

// A project's node selector holds at placement: a global deployment of a
// project runs on the project's nodes alone, whatever its own selector,
// including nodes labelled into or out of the project after the apply.
func TestPlacementKeepsToTheProjectsNodes(t *testing.T) {
	w := newWorld(t, "n1", "n2")
	label := func(id, team string) {
		n, err := w.st.GetNode(w.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		n.Labels = map[string]string{"team": team}
		if _, err := w.st.UpdateNode(w.ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	label("n1", "a")
	label("n2", "b")
	if err := w.st.CreateProject(w.ctx, api.Project{Name: "alpha", NodeSelector: spec.Selector{MatchLabels: map[string]string{"team": "a"}}, CreatedAt: w.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	ds, err := spec.Parse("web.yaml", []byte("apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web, project: alpha}\nspec:\n  mode: global\n  container: {image: hello:v1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := w.clock.Now()
	d := api.Deployment{Project: "alpha", Name: "web", Spec: ds[0], Revision: 1, CreatedAt: now, UpdatedAt: now}
	rev := api.Revision{Project: "alpha", Deployment: "web", Number: 1, Spec: ds[0], Cause: "apply", CreatedAt: now}
	ro := api.Rollout{ID: NewID(), Project: "alpha", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now, UpdatedAt: now}
	if _, err := w.st.ApplyRevision(w.ctx, d, rev, ro, nil); err != nil {
		t.Fatal(err)
	}
	w.c.Need(ReloadAll)
	w.pass()
	placed := func() map[string]int {
		insts, err := w.st.ListInstances(w.ctx, store.InstanceFilter{Project: "alpha"})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, in := range insts {
			m[in.NodeID]++
		}
		return m
	}
	if got := placed(); got["n1"] != 1 || got["n2"] != 0 {
		t.Errorf("instances by node %v; want one on n1 (team a) and none on n2", got)
	}
	label("n2", "a")
	w.c.Need(ReloadNodes | Place)
	w.pass()
	if got := placed(); got["n2"] != 1 {
		t.Errorf("after n2 joined the project's nodes: %v; want an instance on n2", got)
	}
}

// Statuses a leader could not write because its lease had passed to
// another replica in the store, before it knew, go to the next leader:
// a fenced write drops nothing.
func TestFencedStatusesGoToTheNextLeader(t *testing.T) {
	w := newWorld(t, "n1")
	fc := &cluster{leads: true}
	w.c.cfg.Cluster = fc
	if _, err := w.st.AcquireLease(w.ctx, "controller", "other", time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx := store.WithFence(w.ctx, store.Fence{Name: "controller", Holder: "me", Epoch: 1})
	batch := []store.InstanceStatus{{ID: "i1", NodeID: "n1", State: api.InstanceRunning, At: w.clock.Now()}}
	w.c.record(ctx, batch)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.reports) != 1 || fc.reports[0].GetStatus().GetInstanceId() != "i1" {
		t.Errorf("reports handed over %v; want the fenced status", fc.reports)
	}
}
