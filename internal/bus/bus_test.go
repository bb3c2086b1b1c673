package bus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dockfleet/dockfleet/internal/pgtest"
)

func TestLocalDeliversToEverySubscriber(t *testing.T) {
	b := NewLocal()
	a, c := b.Subscribe("nodes"), b.Subscribe("nodes")
	other := b.Subscribe("events")
	if err := b.Publish(context.Background(), "nodes", "n1"); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan Message{a, c} {
		if m := <-ch; m != (Message{Payload: "n1"}) {
			t.Fatalf("got %+v; want the notice n1", m)
		}
	}
	select {
	case m := <-other:
		t.Fatalf("a subscriber of another topic got %+v", m)
	default:
	}
}

func TestSlowSubscriberIsToldToResync(t *testing.T) {
	b := NewLocal()
	ch := b.Subscribe("nodes")
	for range subscriberBuffer + 10 {
		if err := b.Publish(context.Background(), "nodes", "x"); err != nil {
			t.Fatal(err)
		}
	}
	for range subscriberBuffer {
		if m := <-ch; m.Resync {
			t.Fatal("a Resync came before the buffered notices")
		}
	}
	// The dropped notices are owed as one Resync, sent with the next one.
	if err := b.Publish(context.Background(), "nodes", "y"); err != nil {
		t.Fatal(err)
	}
	if m := <-ch; !m.Resync {
		t.Fatalf("got %+v after dropped notices; want a Resync", m)
	}
	if err := b.Publish(context.Background(), "nodes", "z"); err != nil {
		t.Fatal(err)
	}
	if m := <-ch; m != (Message{Payload: "z"}) {
		t.Fatalf("got %+v; want z once caught up", m)
	}
}

func TestMain(m *testing.M) { pgtest.Main(m) }

// postgresURL is a new database for a PostgreSQL test.
func postgresURL(t *testing.T) string { return pgtest.DSN(t) }

// replica starts a bus on url as one replica would, and waits until it
// listens.
func replica(t *testing.T, url string, topics ...Topic) (*Postgres, map[Topic]<-chan Message) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := NewPostgres(ctx, url, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	chs := map[Topic]<-chan Message{}
	for _, tp := range topics {
		chs[tp] = b.Subscribe(tp)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		b.Close()
	})
	<-b.Ready()
	for _, ch := range chs {
		if m := next(t, ch); !m.Resync {
			t.Fatalf("first message %+v; want the Resync of a new connection", m)
		}
	}
	return b, chs
}

func next(t *testing.T, ch <-chan Message) Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message in 10 s")
		return Message{}
	}
}

func TestPostgresReachesEveryReplica(t *testing.T) {
	url := postgresURL(t)
	a, ach := replica(t, url, "deployments")
	_, bch := replica(t, url, "deployments", "nodes")
	if err := a.Publish(context.Background(), "deployments", "default/web"); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan Message{"publisher": ach["deployments"], "other replica": bch["deployments"]} {
		if m := next(t, ch); m != (Message{Payload: "default/web"}) {
			t.Fatalf("%s got %+v; want default/web", name, m)
		}
	}
	select {
	case m := <-bch["nodes"]:
		t.Fatalf("a subscriber of nodes got %+v", m)
	default:
	}
}

func TestPostgresLostConnectionMeansResync(t *testing.T) {
	url := postgresURL(t)
	a, _ := replica(t, url)
	_, bch := replica(t, url, "nodes")
	ch := bch["nodes"]
	// Cut every connection listening on nodes, as a network fault or a
	// restarted database would.
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ch); !m.Resync {
		t.Fatalf("got %+v after the connection was cut; want a Resync", m)
	}
	// Listening again: notices arrive as before.
	if err := a.Publish(context.Background(), "nodes", "n2"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ch); m != (Message{Payload: "n2"}) {
		t.Fatalf("got %+v; want n2", m)
	}
}

func TestPostgresSubscribeLater(t *testing.T) {
	url := postgresURL(t)
	a, _ := replica(t, url, "nodes")
	ch := a.Subscribe("events")
	if m := next(t, ch); !m.Resync {
		t.Fatalf("first message %+v on a topic subscribed late; want a Resync", m)
	}
	if err := a.Publish(context.Background(), "events", "e1"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ch); m != (Message{Payload: "e1"}) {
		t.Fatalf("got %+v; want e1", m)
	}
}
