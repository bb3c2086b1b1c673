package fanout

import (
	"errors"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// blockingStream hands each sent desired state to the test, which decides
// when Send returns.
type blockingStream struct {
	sent    chan uint64
	release chan error
}

func (b *blockingStream) Send(m *agentproto.ServerMessage) error {
	b.sent <- m.GetDesired().GetGeneration()
	return <-b.release
}

func desiredGen(g uint64) *agentproto.DesiredState { return &agentproto.DesiredState{Generation: g} }

func TestSessionSendsNewestStateAndStopsSending(t *testing.T) {
	st := &blockingStream{sent: make(chan uint64), release: make(chan error)}
	s := newSession("n1")
	s.push(desiredGen(1))
	s.push(desiredGen(2))
	select {
	case g := <-st.sent:
		t.Fatalf("sent generation %d before the welcome", g)
	case <-time.After(50 * time.Millisecond):
	}
	s.Start(st)
	if g := <-st.sent; g != 2 {
		t.Fatalf("first send: generation %d; want 2, the newest", g)
	}
	// While the agent is slow, newer states replace unsent ones.
	s.push(desiredGen(3))
	s.push(desiredGen(4))
	st.release <- nil
	if g := <-st.sent; g != 4 {
		t.Fatalf("after a slow send: generation %d; want 4", g)
	}
	st.release <- errors.New("connection reset")
	waitSenderDone(t, s)
	if err := s.Err(); err == nil {
		t.Fatal("a failed send left the session without an error")
	}
	s.push(desiredGen(5)) // a failed stream sends nothing more
	s.Stop()
	select {
	case g := <-st.sent:
		t.Fatalf("sent generation %d after the stream failed", g)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSessionReplaced(t *testing.T) {
	st := &blockingStream{sent: make(chan uint64), release: make(chan error)}
	s := newSession("n1")
	s.Start(st)
	s.fail(ErrReplaced)
	s.push(desiredGen(1))
	if err := s.Err(); !errors.Is(err, ErrReplaced) {
		t.Fatalf("Err() = %v; want ErrReplaced", err)
	}
	s.Stop()
	select {
	case g := <-st.sent:
		t.Fatalf("a replaced session sent generation %d", g)
	case <-time.After(50 * time.Millisecond):
	}
}

// waitSenderDone waits until no sender goroutine runs.
func waitSenderDone(t *testing.T, s *Session) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.sending.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the sender goroutine did not end")
	}
}
