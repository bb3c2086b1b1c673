package liveness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/store/storetest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

const (
	interval = 5 * time.Second
	missed   = 3
	deadline = missed * interval
)

// newStore opens a real SQLite store holding node n1, ready, last seen
// an hour before now.
func newStore(t *testing.T, now time.Time) store.Store {
	hourAgo := now.Add(-time.Hour).UTC()
	return storetest.SQLiteWithNodes(t, api.Node{ID: "n1", Name: "edge-1", Labels: map[string]string{}, State: api.NodeReady,
		LastSeen: hourAgo, CreatedAt: hourAgo})
}

// newRegistry loads a registry from st on clock; changes receives the
// nodes OnChange reports.
func newRegistry(t *testing.T, st store.Store, clock clockwork.Clock) (*Registry, chan string) {
	t.Helper()
	changes := make(chan string, 10)
	r, err := New(context.Background(), st, Config{HeartbeatInterval: interval, MissedHeartbeats: missed, Clock: clock,
		OnChange: func(id string) { changes <- id }})
	if err != nil {
		t.Fatal(err)
	}
	return r, changes
}

func state(r *Registry, id string) api.NodeState {
	n := api.Node{ID: id}
	r.Live(&n)
	return n.State
}

// A node silent for MissedHeartbeats intervals becomes unreachable exactly
// when the clock passes that, not before; a heartbeat makes it ready again.
// Each transition is reported.
func TestSilentNodeBecomesUnreachable(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, changes := newRegistry(t, newStore(t, clock.Now()), clock)
	clock.Advance(RestartGrace)                      // the grace of a loaded node is not under test here
	r.Connected("n1", api.Facts{Hostname: "edge-1"}) // ready already, as loaded: no transition
	clock.Advance(deadline)
	r.Check()
	if got := state(r, "n1"); got != api.NodeReady {
		t.Fatalf("silent for exactly %s (%d heartbeats): %s; want ready", deadline, missed, got)
	}
	clock.Advance(time.Nanosecond)
	r.Check()
	if got := state(r, "n1"); got != api.NodeUnreachable {
		t.Fatalf("silent for %s and a nanosecond: %s; want unreachable", deadline, got)
	}
	if got := <-changes; got != "n1" {
		t.Errorf("OnChange(%q); want n1, unreachable", got)
	}
	r.Heartbeat("n1", Heartbeat{Usage: &api.Usage{Containers: 3}})
	n := api.Node{ID: "n1"}
	r.Live(&n)
	if n.State != api.NodeReady || n.Usage.Containers != 3 || !n.LastSeen.Equal(clock.Now()) {
		t.Errorf("after a heartbeat: %s, %d containers, last seen %s; want ready, 3, %s", n.State, n.Usage.Containers, n.LastSeen, clock.Now())
	}
	if got := <-changes; got != "n1" {
		t.Errorf("OnChange(%q); want n1, ready again", got)
	}
	if len(changes) > 0 {
		t.Errorf("OnChange(%q) with no transition", <-changes)
	}
}

// TestRestartGraceHolds: a restarted server must not call a node
// unreachable (and move its replicated instances) only because the node
// has not reconnected yet; a large fleet takes a minute to come back.
// Silence counts from the end of the grace.
func TestRestartGraceHolds(t *testing.T) {
	clock := clockwork.NewFakeClock()
	restart := clock.Now()
	r, _ := newRegistry(t, newStore(t, restart), clock)
	for _, tc := range []struct {
		after time.Duration
		want  api.NodeState
	}{
		{deadline + time.Second, api.NodeReady},
		{RestartGrace, api.NodeReady},
		{RestartGrace + deadline, api.NodeReady},
		{RestartGrace + deadline + time.Nanosecond, api.NodeUnreachable},
	} {
		clock.Advance(restart.Add(tc.after).Sub(clock.Now()))
		r.Check()
		if got := state(r, "n1"); got != tc.want {
			t.Errorf("%s after the restart, silent since an hour before it: %s; want %s", tc.after, got, tc.want)
		}
	}
}

// Run checks liveness on its ticker and writes each transition, with the
// node's facts, to the store; Flush writes the last heartbeat time.
func TestRunWritesTransitions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clock := clockwork.NewFakeClock()
	st := newStore(t, clock.Now())
	r, changes := newRegistry(t, st, clock)
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	stored := func(want api.NodeState, hostname string) {
		t.Helper()
		// Two tickers, and the writer's window over the change.
		if err := clock.BlockUntilContext(ctx, 3); err != nil {
			t.Fatal(err)
		}
		clock.Advance(nodeWriteWindow)
		testenv.Eventually(t, 10*time.Second, "the node's state in the store", func() error {
			n, err := st.GetNode(ctx, "n1")
			if err != nil {
				return err
			}
			if n.State != want || n.Facts.Hostname != hostname {
				return fmt.Errorf("stored %s, hostname %q; want %s, %q", n.State, n.Facts.Hostname, want, hostname)
			}
			return nil
		})
	}

	clock.Advance(RestartGrace)
	seen := clock.Now()
	r.Connected("n1", api.Facts{Hostname: "edge-1"})
	stored(api.NodeReady, "edge-1")

	clock.Advance(deadline + interval) // past the deadline, at a check
	if got := <-changes; got != "n1" {
		t.Fatalf("OnChange(%q); want n1, unreachable", got)
	}
	stored(api.NodeUnreachable, "edge-1")

	cancel()
	<-done
	r.Flush(context.Background())
	n, err := st.GetNode(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !n.LastSeen.Equal(seen) {
		t.Errorf("stored last seen %s; want %s, the connection", n.LastSeen, seen)
	}
}

// Placement counts --reschedule-after from the moment a node became
// unreachable, not from its last heartbeat: Track's Down is the silence
// past the missed heartbeats, and zero for a ready node.
func TestTrackCountsDownFromUnreachable(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, _ := newRegistry(t, newStore(t, clock.Now()), clock)
	clock.Advance(RestartGrace)
	r.Connected("n1", api.Facts{Hostname: "edge-1"})
	nodes := map[string]api.Node{"n1": {ID: "n1", Name: "edge-1"}}
	clock.Advance(deadline)
	r.Check()
	if st := r.Track(nodes)["n1"]; st.State != api.NodeReady || st.Down != 0 {
		t.Fatalf("silent for %s: %+v; want ready, down 0", deadline, st)
	}
	clock.Advance(time.Nanosecond)
	r.Check()
	clock.Advance(10 * time.Second)
	if st := r.Track(nodes)["n1"]; st.State != api.NodeUnreachable || st.Down != 10*time.Second+time.Nanosecond {
		t.Errorf("unreachable 10s and a nanosecond after its last %d heartbeats were missed: %+v; want down %s", missed, st, 10*time.Second+time.Nanosecond)
	}
}

// LoadNew, on a leader of several replicas, takes in the nodes enrolled
// through another replica and returns only those: the controller adds
// each to its view, and reading none again costs nothing more.
func TestLoadNewReturnsOnlyUnknownNodes(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ctx := context.Background()
	st := newStore(t, clock.Now())
	r, _ := newRegistry(t, st, clock)
	added, err := r.LoadNew(ctx)
	if err != nil || len(added) != 0 {
		t.Fatalf("LoadNew with no node enrolled since: %v, %v; want none", added, err)
	}
	// Another replica enrolls n2.
	if err := st.CreateEnrollToken(ctx, api.EnrollToken{ID: "elsewhere", MaxUses: 1}, "hash2"); err != nil {
		t.Fatal(err)
	}
	n2 := api.Node{ID: "n2", Name: "edge-2", Labels: map[string]string{}, State: api.NodeReady, CreatedAt: clock.Now()}
	if _, err := st.Enroll(ctx, "elsewhere", func(api.EnrollToken, string, *api.Node) error { return nil }, n2); err != nil {
		t.Fatal(err)
	}
	added, err = r.LoadNew(ctx)
	if err != nil || len(added) != 1 || added[0].ID != "n2" || added[0].Name != "edge-2" {
		t.Fatalf("LoadNew after n2 enrolled elsewhere: %+v, %v; want n2 alone", added, err)
	}
	if got := state(r, "n2"); got != api.NodeReady {
		t.Errorf("n2 after LoadNew: %s; want ready (followed from now on)", got)
	}
	if added, err = r.LoadNew(ctx); err != nil || len(added) != 0 {
		t.Errorf("LoadNew again: %v, %v; want none", added, err)
	}
}

// A replica that does not lead records what the agents connected to it
// say (their facts reach the store) but judges no node: a node silent
// past the window stays as the leader left it. Its API shows its own view
// only of the nodes connected to it and heard from; of the others, the
// store's, which the leader writes.
func TestFollowerRecordsButDoesNotJudge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clock := clockwork.NewFakeClock()
	st := newStore(t, clock.Now())
	r, err := New(ctx, st, Config{HeartbeatInterval: interval, MissedHeartbeats: missed, Clock: clock, Replica: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// The leader marked n1 unreachable; this replica, which loaded it
	// ready, shows the store's state, not its own.
	live := func() api.Node {
		n := api.Node{ID: "n1", State: api.NodeUnreachable}
		r.Live(&n)
		return n
	}
	if got := live().State; got != api.NodeUnreachable {
		t.Fatalf("a node held elsewhere: %s; want the store's unreachable", got)
	}
	// n1 connects here: its facts reach the store, and it is shown ready.
	clock.Advance(RestartGrace)
	r.Connected("n1", api.Facts{Hostname: "edge-1"})
	if err := clock.BlockUntilContext(ctx, 3); err != nil { // two tickers and the writer's window
		t.Fatal(err)
	}
	clock.Advance(nodeWriteWindow)
	testenv.Eventually(t, 10*time.Second, "n1's facts in the store", func() error {
		n, err := st.GetNode(ctx, "n1")
		if err != nil {
			return err
		}
		if n.Facts.Hostname != "edge-1" {
			return fmt.Errorf("stored hostname %q", n.Facts.Hostname)
		}
		return nil
	})
	if got := live().State; got != api.NodeReady {
		t.Errorf("a node connected here: %s; want ready", got)
	}
	// Its usage reaches the store at the flush, for the other replicas.
	clock.Advance(time.Second)
	r.Heartbeat("n1", Heartbeat{Usage: &api.Usage{CPUPercent: 7, Containers: 2}})
	if got := live().Usage; got.Containers != 2 {
		t.Errorf("a node connected here: usage %+v; want its heartbeat's", got)
	}
	r.Flush(ctx)
	if n, err := st.GetNode(ctx, "n1"); err != nil || n.Usage.Containers != 2 || n.Usage.CPUPercent != 7 || !n.LastSeen.Equal(clock.Now()) {
		t.Errorf("stored after the flush: usage %+v, last seen %s, %v; want the heartbeat's, at %s", n.Usage, n.LastSeen, err, clock.Now())
	}
	// Silent past the window, at several checks: not judged here.
	for range 2 * missed {
		clock.Advance(interval)
	}
	r.mu.Lock()
	judged := r.nodes["n1"].state
	r.mu.Unlock()
	if judged != api.NodeReady {
		t.Errorf("a replica that does not lead judged a silent node: %s", judged)
	}
	if got := live().State; got != api.NodeUnreachable {
		t.Errorf("a node connected here but silent past the window: %s; want the store's unreachable", got)
	}
	// Once it leads (from its Resume, not before), it does, after the
	// grace a new leader gives.
	if err := r.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(RestartGrace + deadline + interval)
	testenv.Eventually(t, 10*time.Second, "n1 judged unreachable by the new leader", func() error {
		if got := state(r, "n1"); got != api.NodeUnreachable {
			return fmt.Errorf("n1 is %s", got)
		}
		return nil
	})
}

// A newly enrolled node has StartupGrace to connect before its silence
// counts: thousands enrolling at once connect seconds after they enroll,
// and are not lost meanwhile. One that never connects is unreachable once
// the grace and the window passed.
func TestEnrolledNodeHasStartupGrace(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, _ := newRegistry(t, newStore(t, clock.Now()), clock)
	enrolled := clock.Now()
	r.Enrolled(api.Node{ID: "n2", Name: "edge-2", State: api.NodeReady})
	for _, tc := range []struct {
		after time.Duration
		want  api.NodeState
	}{
		{deadline + time.Second, api.NodeReady},
		{StartupGrace + deadline, api.NodeReady},
		{StartupGrace + deadline + time.Nanosecond, api.NodeUnreachable},
	} {
		clock.Advance(enrolled.Add(tc.after).Sub(clock.Now()))
		r.Check()
		if got := state(r, "n2"); got != tc.want {
			t.Errorf("%s after its enrollment, never connected: %s; want %s", tc.after, got, tc.want)
		}
	}
	// The grace ends with the first connection: one that connected and
	// went silent is unreachable after the window alone.
	r.Enrolled(api.Node{ID: "n3", Name: "edge-3", State: api.NodeReady})
	r.Connected("n3", api.Facts{})
	clock.Advance(deadline + time.Nanosecond)
	r.Check()
	if got := state(r, "n3"); got != api.NodeUnreachable {
		t.Errorf("a new node connected, then silent past the window: %s; want unreachable", got)
	}
}

// While the server is busy with a message of a node's agent (a status the
// controller is slow to take), the node's later heartbeats wait behind it:
// that is not its silence, and it is heard from when the wait ends. A
// restarted server's grace is not ended by a node heard through another
// replica, unlike a new node's: the nodes of a replica that died with the
// old leader still have it.
func TestBusyIsNotSilenceAndRestartGraceHolds(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, _ := newRegistry(t, newStore(t, clock.Now()), clock)
	clock.Advance(RestartGrace)
	r.Connected("n1", api.Facts{})
	done := r.Busy("n1")
	clock.Advance(2 * deadline)
	r.Check()
	if got, s := state(r, "n1"), r.Silence("n1"); got != api.NodeReady || s != 0 {
		t.Fatalf("busy with its message for %s: %s, silence %s; want ready, 0", 2*deadline, got, s)
	}
	done()
	done() // ends it once
	clock.Advance(deadline)
	r.Check()
	if got := state(r, "n1"); got != api.NodeReady {
		t.Fatalf("a window after the wait ended: %s; want ready (heard from when it ended)", got)
	}
	clock.Advance(time.Nanosecond)
	r.Check()
	if got := state(r, "n1"); got != api.NodeUnreachable {
		t.Fatalf("silent past the window after the wait: %s; want unreachable", got)
	}

	// A new leader's grace (Resume) holds past a node heard once.
	if err := r.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Present([]string{"n1"}, clock.Now())
	clock.Advance(deadline + time.Second)
	r.Check()
	if got := state(r, "n1"); got != api.NodeReady {
		t.Errorf("heard once after a new leader's start, then silent past the window within the grace: %s; want ready", got)
	}
	busy := r.Busy("n1")
	defer busy()
	clock.Advance(RestartGrace + 2*deadline)
	r.Check()
	if got := state(r, "n1"); got != api.NodeReady {
		t.Errorf("busy again, long past the grace: %s; want ready", got)
	}
}

// newReplica loads a replica's registry (Config.Replica) from a store
// holding nodes n1 and n2, ready, last seen an hour ago, and runs it until
// the test ends; changes receives the nodes OnChange reports.
func newReplica(t *testing.T, clock *clockwork.FakeClock) (*Registry, store.Store, chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hourAgo := clock.Now().Add(-time.Hour).UTC()
	node := func(id string) api.Node {
		return api.Node{ID: id, Name: "edge-" + id, Labels: map[string]string{}, State: api.NodeReady, LastSeen: hourAgo, CreatedAt: hourAgo}
	}
	st := storetest.SQLiteWithNodes(t, node("n1"), node("n2"))
	changes := make(chan string, 10)
	r, err := New(ctx, st, Config{HeartbeatInterval: interval, MissedHeartbeats: missed, Clock: clock, Replica: true,
		OnChange: func(id string) { changes <- id }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := clock.BlockUntilContext(ctx, 2); err != nil { // Run's tickers
		t.Fatal(err)
	}
	return r, st, changes
}

// writeWindow lets the registry's writer, waiting out its window beside
// Run's two tickers, write what it holds.
func writeWindow(t *testing.T, clock *clockwork.FakeClock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 3); err != nil {
		t.Fatalf("the registry's writer is not waiting to write anything: %v", err)
	}
	clock.Advance(nodeWriteWindow)
}

func storedNode(t *testing.T, st store.Store, id string) api.Node {
	t.Helper()
	n, err := st.GetNode(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitStoredReady waits for the store to hold node id ready.
func waitStoredReady(t *testing.T, st store.Store, id string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, id+" ready in the store", func() error {
		if n := storedNode(t, st, id); n.State != api.NodeReady {
			return fmt.Errorf("%s stored %s", id, n.State)
		}
		return nil
	})
}

// A leader that judged nodes unreachable and lost its lease before it
// wrote that does not write it afterwards: the next leader, which hears
// those nodes through the replicas holding them, would see them marked
// unreachable by a replica that no longer judges (in a 40,000-agent run,
// 25,000 nodes stayed so in the store for seven minutes). What else it
// holds for the store is written.
func TestFormerLeaderDoesNotWriteLateJudgements(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, st, changes := newReplica(t, clock)
	if err := r.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(RestartGrace + deadline + interval) // both silent past the grace and the window
	r.Present(nil, clock.Now())                       // held by no live replica
	r.Check()
	for range 2 {
		select {
		case <-changes:
		case <-time.After(10 * time.Second):
			t.Fatal("the leader did not judge the silent nodes unreachable")
		}
	}
	// The lease ends with the judgements still waiting for the writer's
	// window; then n2 connects here.
	r.Follow()
	r.Connected("n2", api.Facts{Hostname: "edge-2"})
	writeWindow(t, clock)
	testenv.Eventually(t, 10*time.Second, "n2's facts in the store", func() error {
		if n := storedNode(t, st, "n2"); n.Facts.Hostname != "edge-2" || n.State != api.NodeReady {
			return fmt.Errorf("n2 stored %s, hostname %q", n.State, n.Facts.Hostname)
		}
		return nil
	})
	if n := storedNode(t, st, "n1"); n.State != api.NodeReady {
		t.Errorf("n1 stored %s after the lease ended; want ready: a former leader's judgement was written", n.State)
	}
}

// The leader rewrites node states the store holds unlike its own when the
// controller reads the nodes (Resync), as a late write of a former leader
// leaves them; a replica that does not lead rewrites nothing.
func TestLeaderResyncsStatesTheStoreGotWrong(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, st, _ := newReplica(t, clock)
	ctx := t.Context()
	late := []store.NodeStatus{{ID: "n1", State: api.NodeUnreachable, LastSeen: clock.Now()}}
	if err := st.UpdateNodeStatuses(ctx, late); err != nil {
		t.Fatal(err)
	}
	listed := func() map[string]api.Node {
		ns, err := st.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]api.Node{}
		for _, n := range ns {
			m[n.ID] = n
		}
		return m
	}
	r.Resync(listed()) // not leading
	r.mu.Lock()
	queued := len(r.writes)
	r.mu.Unlock()
	if queued != 0 {
		t.Fatalf("a replica that does not lead queued %d node writes at a resync", queued)
	}

	if err := r.Resume(ctx); err != nil { // reads n1 unreachable, n2 ready
		t.Fatal(err)
	}
	r.Connected("n1", api.Facts{Hostname: "edge-1"}) // heard: ready, and written
	writeWindow(t, clock)
	waitStoredReady(t, st, "n1")
	// Then a former leader's write lands late.
	if err := st.UpdateNodeStatuses(ctx, late); err != nil {
		t.Fatal(err)
	}
	r.Resync(listed())
	writeWindow(t, clock)
	waitStoredReady(t, st, "n1")
}

// A leader of several replicas judges a node with no stream here only up
// to its last read of the streams the others hold (Present): while it is
// too loaded to read them, their silence does not count; once a read finds
// the node held by no live replica, it does. A node whose stream is here
// is judged by the clock, read or not.
func TestLeaderJudgesNodesHeldElsewhereByItsLastRead(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r, _, _ := newReplica(t, clock)
	if err := r.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(RestartGrace) // past a new leader's grace
	r.Connected("n2", api.Facts{})
	r.Present([]string{"n1"}, clock.Now()) // n1 held by another replica
	clock.Advance(deadline + interval)     // and no read since
	r.Check()
	if got := state(r, "n1"); got != api.NodeReady {
		t.Errorf("held elsewhere, no read of the streams for %s: %s; want ready", deadline+interval, got)
	}
	if got := state(r, "n2"); got != api.NodeUnreachable {
		t.Errorf("connected here and silent for %s: %s; want unreachable", deadline+interval, got)
	}
	r.Present(nil, clock.Now()) // a read: no live replica holds n1
	r.Check()
	if got := state(r, "n1"); got != api.NodeUnreachable {
		t.Errorf("held by no live replica at a read %s after it was last held: %s; want unreachable", deadline+interval, got)
	}
	// A later read that finds it held makes it ready again.
	r.Present([]string{"n1"}, clock.Now())
	if got := state(r, "n1"); got != api.NodeReady {
		t.Errorf("held again at a read: %s; want ready", got)
	}
}
