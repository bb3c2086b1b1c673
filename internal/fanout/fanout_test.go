package fanout

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// A node's last desired state waits for its stream: a node that connects
// gets it, numbered above every earlier one; a second stream of the node
// replaces the first; an unchanged key needs no push.
func TestFanoutKeepsTheLastStatePerNode(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	f := New(clock)
	if stale := f.Stale(slices.Values([]string{"a", "b"})); !slices.Equal(stale, []string{"a", "b"}) {
		t.Errorf("Stale before any push = %v; want both nodes", stale)
	}
	specs := []*agentproto.InstanceSpec{{Id: "i1", SpecHash: "h1"}}
	key := Key(specs, nil)
	f.Send("a", key, &agentproto.DesiredState{Instances: specs})
	if !f.Unchanged("a", key) || f.Unchanged("a", Key(specs, []string{"hello:v2"})) || f.Unchanged("b", key) {
		t.Errorf("Unchanged: a's own key must be, a pull request or another node's must not")
	}
	f.Send("b", Key(nil, []string{"hello:v2"}), &agentproto.DesiredState{PullImages: []string{"hello:v2"}})
	if stale := f.Stale(slices.Values([]string{"a", "b"})); !slices.Equal(stale, []string{"b"}) {
		t.Errorf("Stale = %v; want b, asked to pull", stale)
	}

	st := &blockingStream{sent: make(chan uint64), release: make(chan error)}
	old := f.Connect("a")
	sess := f.Connect("a")
	if !errors.Is(old.Err(), ErrReplaced) {
		t.Errorf("the first stream's Err() = %v; want ErrReplaced", old.Err())
	}
	sess.Start(st)
	if g := <-st.sent; g != uint64(clock.Now().UnixNano())+1 {
		t.Errorf("on connect, sent generation %d; want %d, the first after the clock's time", g, clock.Now().UnixNano()+1)
	}
	st.release <- nil
	f.Send("a", key, &agentproto.DesiredState{Instances: specs})
	if g := <-st.sent; g != uint64(clock.Now().UnixNano())+3 {
		t.Errorf("a new state: generation %d; want %d", g, clock.Now().UnixNano()+3)
	}
	st.release <- nil
	f.Disconnect(old) // replaced already: a's stream stays
	if !f.Connected("a") {
		t.Errorf("a's current stream is gone after its replaced one disconnected")
	}
	sess.Stop()
	f.Disconnect(sess)
	if f.Connected("a") {
		t.Errorf("a is connected after its stream ended")
	}
}

// A state numbered elsewhere (by the leader replica) is delivered as
// numbered, and a late copy of an older one is dropped.
func TestDeliverKeepsTheLeadersNumbers(t *testing.T) {
	f := New(clockwork.NewFakeClock())
	st := &blockingStream{sent: make(chan uint64), release: make(chan error)}
	sess := f.Connect("a")
	sess.Start(st)
	defer sess.Stop()
	if !f.Deliver("a", "k7", &agentproto.DesiredState{Generation: 7}) {
		t.Fatal("the first state was dropped")
	}
	if got := <-st.sent; got != 7 {
		t.Fatalf("sent generation %d; want the leader's 7", got)
	}
	st.release <- nil
	if f.Deliver("a", "k5", &agentproto.DesiredState{Generation: 5}) || f.Deliver("a", "k7", &agentproto.DesiredState{Generation: 7}) {
		t.Fatal("a late or repeated state was kept")
	}
	if d := f.Desired("a"); d.Generation != 7 || !f.Unchanged("a", "k7") {
		t.Fatalf("held %+v; want generation 7 of key k7", d)
	}
}
