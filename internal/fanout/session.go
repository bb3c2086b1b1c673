package fanout

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// ErrReplaced ends a stream whose node connected again on another one.
var ErrReplaced = status.Error(codes.Aborted, "replaced by a newer connection of the same node")

// Stream is the part of an agent's stream a session sends on.
type Stream interface {
	Send(*agentproto.ServerMessage) error
}

// Session is one connected agent's stream. Desired states queue in a
// one-slot mailbox where the newest replaces an unsent older one, so a slow
// agent never blocks the controller and always gets the latest full state.
//
// A goroutine sends only while the mailbox holds something: a server holds
// thousands of idle streams, and a goroutine waiting on each one's mailbox
// would cost its stack for nothing.
type Session struct {
	nodeID string

	mu      sync.Mutex
	stream  Stream // nil until started, and once stopped
	pending *agentproto.DesiredState
	sending sync.WaitGroup // the sender, while one runs
	active  bool           // a sender runs
	failure error          // why the stream must end: a failed send, or ErrReplaced
}

func newSession(nodeID string) *Session { return &Session{nodeID: nodeID} }

// push queues d, replacing an unsent older state.
func (s *Session) push(d *agentproto.DesiredState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = d
	s.kick()
}

// Start lets the session send on stream, after the welcome went out.
func (s *Session) Start(stream Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stream = stream
	s.kick()
}

// kick starts a sender if there is something to send and none runs.
// Callers hold s.mu.
func (s *Session) kick() {
	if s.stream == nil || s.pending == nil || s.active || s.failure != nil {
		return
	}
	s.active = true
	s.sending.Add(1)
	go s.send(s.stream)
}

func (s *Session) send(stream Stream) {
	defer s.sending.Done()
	for {
		s.mu.Lock()
		d := s.pending
		s.pending = nil
		if d == nil || s.failure != nil {
			s.active = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err := stream.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Desired{Desired: d}}); err != nil {
			s.fail(fmt.Errorf("sending desired state: %w", err))
		}
	}
}

// fail marks the stream for ending, with err, at its next message.
func (s *Session) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure == nil {
		s.failure = err
	}
}

// Err says why the stream must end (a failed send, or ErrReplaced), or nil.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

// Stop ends sending and waits for a send in flight: gRPC allows no send
// after the stream's handler returned.
func (s *Session) Stop() {
	s.mu.Lock()
	s.stream = nil
	s.mu.Unlock()
	s.sending.Wait()
}
