package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jonboulle/clockwork"
)

// reconnectBackoff bounds how long the listener waits between attempts to
// connect again; notices published meanwhile are lost, and the resync
// after the reconnection covers them.
const (
	minReconnect = 100 * time.Millisecond
	maxReconnect = 5 * time.Second
)

// Postgres is the bus of replicas sharing one PostgreSQL database: a
// notice is a NOTIFY, delivered by PostgreSQL to every session that
// LISTENs on its topic. Each replica listens on one connection of its own
// (Run); when that connection is lost, the notices of the time it was down
// are lost with it, so every subscriber is told to resync once it is back.
type Postgres struct {
	url   string
	pool  *pgxpool.Pool
	log   *slog.Logger
	clock clockwork.Clock
	subs  subscribers

	mu        sync.Mutex
	listening map[Topic]bool // topics LISTENed on the current connection
	relisten  chan struct{}  // a topic was subscribed to that is not
	ready     chan struct{}  // closed once the first connection listens
	readyOnce sync.Once
}

// NewPostgres returns a bus over the PostgreSQL database at url. It
// publishes at once; Run must run for notices to arrive.
func NewPostgres(ctx context.Context, url string, log *slog.Logger, clock clockwork.Clock) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	// Publishing is one short statement; two connections are plenty.
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Postgres{url: url, pool: pool, log: log, clock: clock, listening: map[Topic]bool{},
		relisten: make(chan struct{}, 1), ready: make(chan struct{})}, nil
}

// Close closes the publishing connections.
func (p *Postgres) Close() { p.pool.Close() }

// Publish sends a NOTIFY on topic.
func (p *Postgres) Publish(ctx context.Context, topic Topic, payload string) error {
	if _, err := p.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, string(topic), payload); err != nil {
		return fmt.Errorf("bus: publishing on %s: %w", topic, err)
	}
	return nil
}

// Subscribe returns the messages of topic. A topic new to the listening
// connection is LISTENed on at once; its first message is a Resync.
func (p *Postgres) Subscribe(topic Topic) <-chan Message {
	ch := p.subs.add(topic)
	p.mu.Lock()
	known := p.listening[topic]
	p.mu.Unlock()
	if !known {
		select {
		case p.relisten <- struct{}{}:
		default:
		}
	}
	return ch
}

// Ready is closed once the listening connection first listens on every
// topic subscribed to before Run started.
func (p *Postgres) Ready() <-chan struct{} { return p.ready }

// Run listens and delivers notices until ctx ends, connecting again
// whenever the connection is lost.
func (p *Postgres) Run(ctx context.Context) {
	wait := minReconnect
	for {
		err := p.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.log.Warn("bus: listening connection lost; subscribers resync once it is back", "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-p.clock.After(wait):
			}
			wait = min(wait*2, maxReconnect)
			continue
		}
		wait = minReconnect // a subscription asked for a new connection
	}
}

// listen holds one listening connection until it fails, ctx ends, or a new
// topic needs LISTENing (then it returns nil).
func (p *Postgres) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Drain a relisten request the connection about to be made covers.
	select {
	case <-p.relisten:
	default:
	}
	topics := p.subs.topics()
	for _, t := range topics {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{string(t)}.Sanitize()); err != nil {
			return fmt.Errorf("listening on %s: %w", t, err)
		}
	}
	p.mu.Lock()
	p.listening = map[Topic]bool{}
	for _, t := range topics {
		p.listening[t] = true
	}
	p.mu.Unlock()
	// Whatever was published before this connection listened is unknown.
	p.subs.resyncAll()
	p.readyOnce.Do(func() { close(p.ready) })

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.relisten:
			cancel()
		case <-wctx.Done():
		}
	}()
	for {
		n, err := conn.WaitForNotification(wctx)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return nil // a new topic: connect again with it
			}
			return err
		}
		p.subs.deliver(Topic(n.Channel), Message{Payload: n.Payload})
	}
}
