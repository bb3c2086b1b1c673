// Package bus carries short notices between the server replicas that
// share one store: "deployments changed", "node X revoked", "desired
// states written up to sequence N". A notice only says where to look; the
// state itself is always read from the store. So a notice may be lost (a
// replica's listening connection drops, a subscriber is too slow) and
// nothing is wrong but for a delay: a subscriber is then told to resync,
// and reads what it would have been told about.
//
// A single server (SQLite) uses Local, in memory. Replicas on PostgreSQL
// use Postgres: LISTEN/NOTIFY on a connection of its own.
package bus

import (
	"context"
	"sync"
)

// Topic names a kind of notice. On PostgreSQL it is the channel name:
// lowercase letters and underscores.
type Topic string

// Message is one notice, or a call to resync.
type Message struct {
	// Payload is what the publisher said: short, often an ID.
	Payload string
	// Resync says that notices of the topic may have been lost since the
	// last message: the subscriber must read again whatever it follows.
	Resync bool
}

// Bus publishes notices and delivers them to the subscribers of every
// replica, this one's included.
type Bus interface {
	// Publish sends a notice to every subscriber of topic. It returns once
	// the notice is on its way; delivery is not confirmed.
	Publish(ctx context.Context, topic Topic, payload string) error
	// Subscribe returns the messages of topic. Its channel is buffered; a
	// subscriber that falls behind gets one Resync in place of what it
	// missed. Subscribe before the notices that matter are published.
	Subscribe(topic Topic) <-chan Message
}

// subscriberBuffer is how many notices a subscriber may fall behind by
// before they collapse into one resync.
const subscriberBuffer = 256

// subscribers delivers messages to the channels of each topic; both
// implementations share it.
type subscribers struct {
	mu   sync.Mutex
	subs map[Topic][]*subscriber
}

type subscriber struct {
	ch chan Message
	// behind says that a message was dropped: a Resync is owed.
	behind bool
}

func (s *subscribers) add(topic Topic) <-chan Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[Topic][]*subscriber{}
	}
	sub := &subscriber{ch: make(chan Message, subscriberBuffer)}
	s.subs[topic] = append(s.subs[topic], sub)
	return sub.ch
}

func (s *subscribers) topics() []Topic {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Topic, 0, len(s.subs))
	for t := range s.subs {
		out = append(out, t)
	}
	return out
}

// deliver hands m to every subscriber of topic without blocking: one that
// is full owes a Resync, sent as soon as it has room.
func (s *subscribers) deliver(topic Topic, m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs[topic] {
		send := m
		if sub.behind {
			send = Message{Resync: true}
		}
		select {
		case sub.ch <- send:
			sub.behind = false
		default:
			sub.behind = true
		}
	}
}

// resyncAll tells every subscriber to resync.
func (s *subscribers) resyncAll() {
	for _, t := range s.topics() {
		s.deliver(t, Message{Resync: true})
	}
}

// Local is the bus of a single server: notices go from publisher to
// subscribers in memory.
type Local struct {
	subs subscribers
}

// NewLocal returns an in-memory bus.
func NewLocal() *Local { return &Local{} }

// Publish delivers the notice to the subscribers of topic.
func (l *Local) Publish(_ context.Context, topic Topic, payload string) error {
	l.subs.deliver(topic, Message{Payload: payload})
	return nil
}

// Subscribe returns the messages of topic.
func (l *Local) Subscribe(topic Topic) <-chan Message { return l.subs.add(topic) }
