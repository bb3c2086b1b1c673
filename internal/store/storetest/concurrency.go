package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// These cases run writers at once on the store's several connections: they
// hold on an engine that serialises writers (SQLite) and must hold as well
// on one that runs them side by side (PostgreSQL).

// race runs f(0) to f(n-1) at once, each in its own goroutine, and returns
// their errors.
func race(n int, f func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWins checks that exactly one of errs is nil and that every other is
// want.
func oneWins(t *testing.T, what string, errs []error, want error) {
	t.Helper()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, want):
			t.Errorf("%s: a loser got %v; want %v", what, err, want)
		}
	}
	if won != 1 {
		t.Errorf("%s: %d of %d won; want 1", what, won, len(errs))
	}
}

const racers = 8

// testOptimisticRace has writers that read the same version of a node, and
// then of a deployment, update it at once: one wins, the others conflict.
func testOptimisticRace(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	n, err := s.Enroll(ctx, "t", pass, newNode("a", "alpha"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.PutDeployment(ctx, newDeployment("default", "web"))
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		errs := race(racers, func(i int) error {
			n := n
			n.Labels = map[string]string{"writer": fmt.Sprint(i)}
			_, err := s.UpdateNode(ctx, n)
			return err
		})
		oneWins(t, fmt.Sprintf("round %d of node updates", round), errs, store.ErrConflict)
		got, err := s.GetNode(ctx, "a")
		if err != nil || got.Version != n.Version+1 || got.Labels["writer"] != fmt.Sprint(slices.Index(errs, nil)) {
			t.Errorf("round %d: node %+v, %v; want version %d with the winner's labels", round, got, err, n.Version+1)
		}
		n = got

		errs = race(racers, func(i int) error {
			d := d
			d.Revision = d.Revision + 1 + int64(i)
			_, err := s.PutDeployment(ctx, d)
			return err
		})
		oneWins(t, fmt.Sprintf("round %d of deployment updates", round), errs, store.ErrConflict)
		gotD, err := s.GetDeployment(ctx, "default", "web")
		if err != nil || gotD.Version != d.Version+1 || gotD.Revision != d.Revision+1+int64(slices.Index(errs, nil)) {
			t.Errorf("round %d: deployment %+v, %v; want version %d with the winner's revision", round, gotD, err, d.Version+1)
		}
		d = gotD
	}
}

// testEnrollOneUse enrolls many agents at once on a token with one use:
// one node is made, and the others are refused by the check.
func testEnrollOneUse(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", MaxUses: 1, CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	usedUp := errors.New("used up")
	check := func(t api.EnrollToken, _ string, _ *api.Node) error {
		if t.Uses >= t.MaxUses {
			return usedUp
		}
		return nil
	}
	errs := race(racers, func(i int) error {
		_, err := s.Enroll(ctx, "t", check, newNode(fmt.Sprint("n", i), fmt.Sprint("node", i)))
		return err
	})
	oneWins(t, "enrollments on a one-use token", errs, usedUp)
	if nodes, err := s.ListNodes(ctx); err != nil || len(nodes) != 1 {
		t.Errorf("nodes after the race: %d, %v; want 1", len(nodes), err)
	}
	if toks, err := s.ListEnrollTokens(ctx); err != nil || toks[0].Uses != 1 {
		t.Errorf("token after the race: %+v, %v; want 1 use", toks, err)
	}
}

// testPinRace pins a revision's digest from many nodes at once: the first
// pin holds, and every caller is told that one.
func testPinRace(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := newDeployment("default", "web")
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: d.Spec, Cause: "apply", CreatedAt: now}
	ro := api.Rollout{ID: "r1", Project: "default", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now}
	if _, err := s.ApplyRevision(ctx, d, rev, ro, nil); err != nil {
		t.Fatal(err)
	}
	got := make([]api.Revision, racers)
	errs := race(racers, func(i int) error {
		var err error
		got[i], err = s.PinRevisionDigest(ctx, "default", "web", 1, fmt.Sprintf("hello@sha256:%d", i), fmt.Sprint("n", i), fmt.Sprint("node", i))
		return err
	})
	stored, err := s.GetRevision(ctx, "default", "web", 1)
	if err != nil || stored.ImageDigest == "" {
		t.Fatalf("revision after the race: %+v, %v; want a digest pinned", stored, err)
	}
	for i := range racers {
		if errs[i] != nil || got[i].ImageDigest != stored.ImageDigest || got[i].PinnedBy != stored.PinnedBy {
			t.Errorf("pin by n%d: %s by %s, %v; want the pin that held, %s by %s", i, got[i].ImageDigest, got[i].PinnedBy, errs[i],
				stored.ImageDigest, stored.PinnedBy)
		}
	}
	if want := "hello@sha256:" + stored.PinnedBy[1:]; stored.ImageDigest != want {
		t.Errorf("stored pin %s by %s; want one node's digest and name together", stored.ImageDigest, stored.PinnedBy)
	}
}

// testApplyRace applies new revisions of one deployment at once: one
// apply wins, and its rollout is the one active rollout, with the first
// superseded once.
func testApplyRace(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := newDeployment("default", "web")
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: d.Spec, Cause: "apply", CreatedAt: now}
	ro := api.Rollout{ID: "r1", Project: "default", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now}
	d, err := s.ApplyRevision(ctx, d, rev, ro, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := race(racers, func(i int) error {
		d := d
		d.Revision = 2
		rev := rev
		rev.Number = 2
		ro := api.Rollout{ID: fmt.Sprint("r2-", i), Project: "default", Deployment: "web", From: 1, To: 2, State: api.RolloutRunning, CreatedAt: now}
		_, err := s.ApplyRevision(ctx, d, rev, ro, []api.Event{{Time: now, Project: "default", Deployment: "web", Rollout: ro.ID, Type: "rollout.started"}})
		return err
	})
	oneWins(t, "applies of revision 2", errs, store.ErrConflict)
	winner := fmt.Sprint("r2-", slices.Index(errs, nil))
	active, err := s.ActiveRollouts(ctx)
	if err != nil || len(active) != 1 || active[0].ID != winner {
		t.Errorf("active rollouts %+v, %v; want only %s", active, err, winner)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{})
	var types []string
	for _, e := range evs {
		types = append(types, e.Type+" "+e.Rollout)
	}
	if want := []string{"rollout.started " + winner, "rollout.superseded r1"}; err != nil || !slices.Equal(types, want) {
		t.Errorf("events %q, %v; want %q", types, err, want)
	}
}

// testEventsInOrder appends events from several writers while a reader
// polls for those after the last it saw, as the event stream does: the
// reader must see every event, each once, in order. An event that became
// visible after one with a higher sequence number would be skipped.
func testEventsInOrder(t *testing.T, s store.Store) {
	const writers, batches, perBatch = 6, 20, 3
	done := make(chan struct{})
	var seen []int64
	polled := make(chan error, 1)
	go func() {
		var last int64
		poll := func() error {
			for {
				evs, err := s.ListEvents(ctx, store.EventFilter{After: last})
				if err != nil {
					return err
				}
				for _, e := range evs {
					seen = append(seen, e.Seq)
					last = e.Seq
				}
				if len(evs) < 1000 {
					return nil
				}
			}
		}
		for {
			select {
			case <-done:
				polled <- poll() // what the writers committed last
				return
			default:
			}
			if err := poll(); err != nil {
				polled <- err
				return
			}
		}
	}()
	errs := race(writers, func(w int) error {
		for b := range batches {
			var evs []api.Event
			for i := range perBatch {
				evs = append(evs, api.Event{Time: time.Now(), Project: "default", Deployment: "web", Type: "t", Message: fmt.Sprint(w, "/", b, "/", i)})
			}
			if err := s.AppendEvents(ctx, evs); err != nil {
				return err
			}
		}
		return nil
	})
	close(done)
	if err := errors.Join(append(errs, <-polled)...); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, e := range all {
		want = append(want, e.Seq)
	}
	if len(want) != writers*batches*perBatch {
		t.Errorf("%d events stored; want %d", len(want), writers*batches*perBatch)
	}
	if !slices.Equal(seen, want) {
		t.Errorf("the poller saw %d events of %d, %s; want every one, in order", len(seen), len(want), missing(want, seen))
	}
}

// missing describes the sequence numbers of want that got lacks.
func missing(want, got []int64) string {
	var m []int64
	for _, w := range want {
		if !slices.Contains(got, w) {
			m = append(m, w)
		}
	}
	return fmt.Sprintf("missing %v", m)
}

// testNodeBatchesRace writes heartbeat times and node statuses in batches
// of many nodes from several writers at once, as the liveness of several
// servers does: every batch must succeed, and the latest time stays. One
// writer gives usage with its times; it is the last stored. A heartbeat
// batch of 1,100 nodes takes three statements (store.SetSeen).
func testNodeBatchesRace(t *testing.T, s store.Store) {
	const nodes, rounds = 1100, 4
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	for i := range nodes {
		if _, err := s.Enroll(ctx, "t", pass, newNode(fmt.Sprint("n", i), fmt.Sprint("node", i))); err != nil {
			t.Fatal(err)
		}
	}
	at := func(round, writer int) time.Time { return time.Unix(1e9+int64(round*10+writer), 0).UTC() }
	errs := race(4, func(w int) error {
		for r := range rounds {
			var err error
			if w%2 == 0 {
				seen := map[string]store.Seen{}
				for i := range nodes {
					x := store.Seen{At: at(r, w)}
					if w == 2 {
						x.Usage = &api.Usage{Containers: r + 1}
					}
					seen[fmt.Sprint("n", i)] = x
				}
				err = s.SetSeen(ctx, seen)
			} else {
				var ss []store.NodeStatus
				for i := range nodes {
					ss = append(ss, store.NodeStatus{ID: fmt.Sprint("n", i), State: api.NodeReady, LastSeen: at(r, w)})
				}
				err = s.UpdateNodeStatuses(ctx, ss)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	latest := at(rounds-1, 3)
	list, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != nodes {
		t.Fatalf("%d nodes listed; want %d", len(list), nodes)
	}
	for _, n := range list {
		if !n.LastSeen.Equal(latest) || n.Usage.Containers != rounds {
			t.Errorf("node %s last seen %v, %d containers; want the latest batch's %v, and the last usage given, %d",
				n.ID, n.LastSeen, n.Usage.Containers, latest, rounds)
			break
		}
	}
}
