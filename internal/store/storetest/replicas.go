package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/store"
)

func testReplicas(t *testing.T, s store.Store) {
	started := time.Unix(1700000000, 0).UTC()
	for _, id := range []string{"r2", "r1"} {
		if err := s.ReplicaSeen(ctx, store.Replica{ID: id, AgentAddr: id + ":7401", APIAddr: id + ":7400", StartedAt: started}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.ListReplicas(ctx)
	if err != nil || len(rs) != 2 || rs[0].ID != "r1" || rs[1].AgentAddr != "r2:7401" || !rs[0].StartedAt.Equal(started) {
		t.Fatalf("ListReplicas = %+v, %v; want r1 and r2 with their addresses", rs, err)
	}
	if rs[0].Silence < 0 || rs[0].Silence > time.Minute {
		t.Fatalf("a replica just seen is silent for %s", rs[0].Silence)
	}
	if err := s.UpdateSessions(ctx, []store.Session{{NodeID: "n1", Replica: "r1", Since: started}, {NodeID: "n2", Replica: "r2", Since: started}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteReplica(ctx, "r2"); err != nil {
		t.Fatal(err)
	}
	if rs, _ := s.ListReplicas(ctx); len(rs) != 1 || rs[0].ID != "r1" {
		t.Fatalf("after r2 was deleted: %+v", rs)
	}
	if ss, _ := s.ListSessions(ctx); len(ss) != 1 || ss[0].NodeID != "n1" {
		t.Fatalf("sessions after r2 was deleted: %+v; want n1's only", ss)
	}
}

func testSessions(t *testing.T, s store.Store) {
	at := time.Unix(1700000000, 0).UTC()
	must := func(ss ...store.Session) {
		t.Helper()
		if err := s.UpdateSessions(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	must(store.Session{NodeID: "n1", Replica: "r1", Since: at})
	// The agent moved to r2; r1's late close of its old stream keeps r2's.
	must(store.Session{NodeID: "n1", Replica: "r2", Since: at.Add(time.Second)}, store.Session{NodeID: "n1", Replica: "r1", Closed: true})
	ss, err := s.ListSessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].Replica != "r2" || !ss[0].Since.Equal(at.Add(time.Second)) {
		t.Fatalf("ListSessions = %+v, %v; want n1 on r2", ss, err)
	}
	// r1 handles the agent's old messages late and reopens its stream: r2,
	// which holds the newer one, keeps the record, and r1's close of its
	// old stream after that leaves it too.
	must(store.Session{NodeID: "n1", Replica: "r1", Since: at.Add(2 * time.Second), Reopened: true})
	must(store.Session{NodeID: "n1", Replica: "r1", Closed: true})
	if ss, _ := s.ListSessions(ctx); len(ss) != 1 || ss[0].Replica != "r2" {
		t.Fatalf("after r1 reopened and closed its old stream: %+v; want n1 on r2", ss)
	}
	must(store.Session{NodeID: "n1", Replica: "r2", Closed: true})
	if ss, _ := s.ListSessions(ctx); len(ss) != 0 {
		t.Fatalf("after the close: %+v; want none", ss)
	}
	// A stream reopened where no replica holds the node takes the record.
	must(store.Session{NodeID: "n1", Replica: "r1", Since: at.Add(3 * time.Second), Reopened: true})
	if ss, _ := s.ListSessions(ctx); len(ss) != 1 || ss[0].Replica != "r1" {
		t.Fatalf("after r1 reopened with no holder: %+v; want n1 on r1", ss)
	}
}

func testDesiredStates(t *testing.T, s store.Store) {
	seq1, err := s.PutDesiredStates(ctx, []store.DesiredState{{NodeID: "n1", Key: "k1", State: []byte{1}}, {NodeID: "n2", Key: "k2", State: []byte{2}}})
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := s.PutDesiredStates(ctx, []store.DesiredState{{NodeID: "n2", Key: "k2b", State: []byte{2, 2}}})
	if err != nil || seq2 <= seq1 {
		t.Fatalf("second write got seq %d, %v; want more than %d", seq2, err, seq1)
	}
	ds, last, err := s.DesiredSince(ctx, 0)
	if err != nil || last != seq2 || len(ds) != 2 || ds[0].NodeID != "n1" || ds[1].NodeID != "n2" || ds[1].Key != "k2b" || ds[1].State != nil {
		t.Fatalf("DesiredSince(0) = %+v, %d, %v; want n1 then n2 (k2b), no states, up to %d", ds, last, err, seq2)
	}
	if ds, last, _ := s.DesiredSince(ctx, seq1); len(ds) != 1 || ds[0].NodeID != "n2" || last != seq2 {
		t.Fatalf("DesiredSince(%d) = %+v, %d; want n2 alone", seq1, ds, last)
	}
	if ds, last, _ := s.DesiredSince(ctx, seq2); len(ds) != 0 || last != seq2 {
		t.Fatalf("DesiredSince(%d) = %+v, %d; want nothing", seq2, ds, last)
	}
	// More nodes than one statement writes, or one query asks for, at
	// once; one node twice, whose last state wins.
	var many []store.DesiredState
	var ids []string
	for i := range 2503 {
		id := fmt.Sprintf("m%04d", i)
		ids = append(ids, id)
		many = append(many, store.DesiredState{NodeID: id, Key: "k", State: []byte(id)})
	}
	many = append(many, store.DesiredState{NodeID: "m0007", Key: "k", State: []byte("m0007 again")})
	if _, err := s.PutDesiredStates(ctx, many); err != nil {
		t.Fatal(err)
	}
	got, err := s.DesiredStates(ctx, append(ids, "n2", "unknown"))
	if err != nil || len(got) != 2504 {
		t.Fatalf("DesiredStates of 2,505 nodes = %d states, %v; want 2,504 (one node has none)", len(got), err)
	}
	for _, d := range got {
		want := d.NodeID
		if d.NodeID == "m0007" {
			want = "m0007 again"
		}
		if d.NodeID == "n2" && (d.Key != "k2b" || !slices.Equal(d.State, []byte{2, 2})) || d.NodeID != "n2" && string(d.State) != want {
			t.Fatalf("DesiredStates gave %+v", d)
		}
	}
	if err := s.DeleteDesiredStates(ctx, []string{"n1", "n2"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.DesiredStates(ctx, []string{"n1", "n2"}); len(got) != 0 {
		t.Fatalf("deleted desired states still there: %+v", got)
	}
}

// testDesiredStatesInOrder races writers of desired states against a
// reader that follows DesiredSince, as a replica does: the reader must
// see every write, each under a number greater than the last it saw.
func testDesiredStatesInOrder(t *testing.T, s store.Store) {
	const writers, writes = 4, 15
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range writes {
				key := fmt.Sprintf("w%d-%d", w, i)
				if _, err := s.PutDesiredStates(ctx, []store.DesiredState{{NodeID: fmt.Sprintf("n%d", w), Key: key, State: []byte(key)}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	last := int64(0)
	seen := map[string]string{} // node → the last key seen
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true // one more read after the last write
		default:
		}
		ds, next, err := s.DesiredSince(ctx, last)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.Seq <= last {
				t.Fatalf("DesiredSince(%d) gave seq %d", last, d.Seq)
			}
			seen[d.NodeID] = d.Key
		}
		last = next
	}
	for w := range writers {
		if want := fmt.Sprintf("w%d-%d", w, writes-1); seen[fmt.Sprintf("n%d", w)] != want {
			t.Errorf("node n%d: the reader last saw %q; want %q, the last write", w, seen[fmt.Sprintf("n%d", w)], want)
		}
	}
}

func testReports(t *testing.T, s store.Store) {
	if err := s.AppendReports(ctx, []store.Report{{NodeID: "n1", Body: []byte("a")}, {NodeID: "n2", Body: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendReports(ctx, []store.Report{{NodeID: "n1", Body: []byte("c")}}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Reports(ctx, 2)
	if err != nil || len(rs) != 2 || string(rs[0].Body) != "a" || string(rs[1].Body) != "b" || rs[1].NodeID != "n2" {
		t.Fatalf("Reports(2) = %+v, %v; want a and b, oldest first", rs, err)
	}
	if err := s.DeleteReports(ctx, []int64{rs[0].Seq, rs[1].Seq}); err != nil {
		t.Fatal(err)
	}
	if rs, _ := s.Reports(ctx, 10); len(rs) != 1 || string(rs[0].Body) != "c" {
		t.Fatalf("after deleting two: %+v; want c alone", rs)
	}
}
