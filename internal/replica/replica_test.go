package replica

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/bus"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// stream records what a session sends.
type stream struct{ sent chan *agentproto.DesiredState }

func (s *stream) Send(m *agentproto.ServerMessage) error {
	s.sent <- m.GetDesired()
	return nil
}

func connect(t *testing.T, out *fanout.Fanout, id string) *stream {
	st := &stream{sent: make(chan *agentproto.DesiredState, 16)}
	sess := out.Connect(id)
	sess.Start(st)
	t.Cleanup(sess.Stop)
	return st
}

func next(t *testing.T, s *stream) *agentproto.DesiredState {
	t.Helper()
	select {
	case d := <-s.sent:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no desired state sent in 10 s")
		return nil
	}
}

func state(ids ...string) *agentproto.DesiredState {
	d := &agentproto.DesiredState{}
	for _, id := range ids {
		d.Instances = append(d.Instances, &agentproto.InstanceSpec{Id: id, SpecHash: "h-" + id})
	}
	return d
}

// TestLeaderStatesReachOtherReplicas: the leader's outbox writes states to
// a real PostgreSQL store, and a feed on another replica, told over a real
// LISTEN/NOTIFY bus, delivers them to the streams it holds, numbered as
// written; a node that connects later gets its state at once.
func TestLeaderStatesReachOtherReplicas(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pgtest.DSN(t)
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	leaderBus, err := bus.NewPostgres(ctx, dsn, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer leaderBus.Close()
	otherBus, err := bus.NewPostgres(ctx, dsn, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer otherBus.Close()
	out := fanout.New(clockwork.NewRealClock())
	feed := NewFeed(st, otherBus, out, clockwork.NewFakeClock(), log) // no resync: notices only
	done := make(chan struct{})
	go func() { defer close(done); otherBus.Run(ctx) }()
	<-otherBus.Ready()
	feedDone := make(chan struct{})
	go func() { defer close(feedDone); feed.Run(ctx) }()
	defer func() { cancel(); <-done; <-feedDone }()

	n1 := connect(t, out, "n1")
	outbox, err := NewOutbox(ctx, st, leaderBus, log)
	if err != nil {
		t.Fatal(err)
	}
	outbox.Send("n1", "k1", state("i1"))
	outbox.Send("n2", "k2", state("i2"))
	if err := outbox.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d := next(t, n1)
	if len(d.Instances) != 1 || d.Instances[0].Id != "i1" || d.Generation == 0 {
		t.Fatalf("n1 got %+v; want its state, i1, numbered by the store", d)
	}
	first := d.Generation
	// n2 was not connected here; it gets its state when it connects.
	n2 := connect(t, out, "n2")
	if err := feed.NodeConnected(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if d := next(t, n2); len(d.Instances) != 1 || d.Instances[0].Id != "i2" {
		t.Fatalf("n2 got %+v on connecting; want i2", d)
	}
	// A new pass: only what changed is written and sent, numbered on.
	if !outbox.Unchanged("n2", "k2") || outbox.Unchanged("n1", "k1b") {
		t.Fatal("the outbox's keys do not follow what it sent")
	}
	outbox.Send("n1", "k1b", state("i1", "i3"))
	if err := outbox.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d := next(t, n1); len(d.Instances) != 2 || d.Generation <= first {
		t.Fatalf("n1 got %+v; want i1 and i3 numbered above %d", d, first)
	}
	// A new leader's outbox knows what the store holds: nothing is stale.
	again, err := NewOutbox(ctx, st, leaderBus, log)
	if err != nil {
		t.Fatal(err)
	}
	if stale := again.Stale(slices.Values([]string{"n1", "n2", "n3"})); !slices.Equal(stale, []string{"n3"}) {
		t.Fatalf("a new leader finds %v stale; want n3 alone, which has no state", stale)
	}
}

// TestLostNoticeIsCaughtByTheResync: a feed whose bus never hears of the
// leader's write (a lost notification) delivers it at its next resync.
func TestLostNoticeIsCaughtByTheResync(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.OpenPostgres(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	clock := clockwork.NewFakeClock()
	out := fanout.New(clock)
	// Two buses that share nothing: every notice is lost.
	feed := NewFeed(st, bus.NewLocal(), out, clock, log)
	done := make(chan struct{})
	go func() { defer close(done); feed.Run(ctx) }()
	defer func() { cancel(); <-done }()
	n1 := connect(t, out, "n1")
	outbox, err := NewOutbox(ctx, st, bus.NewLocal(), log)
	if err != nil {
		t.Fatal(err)
	}
	outbox.Send("n1", "k1", state("i1"))
	if err := outbox.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-n1.sent:
		t.Fatalf("n1 got %+v with no notice and no resync", d)
	default:
	}
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ResyncInterval)
	if d := next(t, n1); len(d.Instances) != 1 || d.Instances[0].Id != "i1" {
		t.Fatalf("n1 got %+v at the resync; want i1", d)
	}
}
