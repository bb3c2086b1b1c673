package agentsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// sentStream records what the service sends on an agent's stream. The
// rest of a gRPC stream is not used by admit, leave and Drain.
type sentStream struct {
	grpc.BidiStreamingServer[agentproto.AgentMessage, agentproto.ServerMessage]
	mu   sync.Mutex
	sent []*agentproto.ServerMessage
}

func (s *sentStream) Send(m *agentproto.ServerMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, m)
	return nil
}

// goAways returns the GoAways sent on s.
func (s *sentStream) goAways() []*agentproto.GoAway {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*agentproto.GoAway
	for _, m := range s.sent {
		if g := m.GetGoaway(); g != nil {
			out = append(out, g)
		}
	}
	return out
}

func newGoAwayService(maxAgents int, log *slog.Logger) *Service {
	return New(Deps{Logger: log, MaxAgents: maxAgents})
}

func stream(version uint32) (*agentStream, *sentStream) {
	s := &sentStream{}
	return &agentStream{stream: s, version: version}, s
}

// Drain tells every agent that knows GoAway to go within three quarters of
// the drain time (the rest is for the last to close its stream),
// and returns once they left; agents too old to know it are not told
// and not waited for; an agent that connects during the drain is told at
// once.
func TestDrainTellsAgentsAndWaitsForThem(t *testing.T) {
	var out testenv.Buffer
	a := newGoAwayService(0, slog.New(slog.NewTextHandler(&out, nil)))
	newer, newerSent := stream(goAwayVersion)
	newer2, newer2Sent := stream(goAwayVersion)
	old, oldSent := stream(goAwayVersion - 1)
	for _, st := range []*agentStream{newer, newer2, old} {
		if err := a.admit(st, "n"); err != nil {
			t.Fatalf("admit: %v", err)
		}
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		a.Drain(context.Background(), 7*time.Second)
	}()
	for _, s := range []*sentStream{newerSent, newer2Sent} {
		testenv.Eventually(t, within, "a GoAway", func() error {
			if g := s.goAways(); len(g) != 1 || g[0].Reason != ReasonShuttingDown || g[0].ReconnectWithinMs != 5250 {
				return fmt.Errorf("sent %v; want one GoAway, shutting down, within 5250 ms", g)
			}
			return nil
		})
	}
	if g := oldSent.goAways(); len(g) != 0 {
		t.Errorf("an agent of protocol version %d was sent %v; want nothing", goAwayVersion-1, g)
	}

	late, lateSent := stream(goAwayVersion)
	err := a.admit(late, "n")
	if status.Code(err) != codes.Unavailable || len(lateSent.goAways()) != 1 {
		t.Errorf("an agent connecting during the drain: %v, sent %v; want Unavailable and a GoAway", err, lateSent.goAways())
	}

	a.leave(newer)
	select {
	case <-drained:
		t.Fatal("Drain returned with one told agent still connected")
	case <-time.After(50 * time.Millisecond):
	}
	a.leave(newer2)
	<-drained
	a.Wait()
	for _, want := range []string{"draining agents", "agents=2", "too_old_to_tell=1", "agents drained"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, out.String())
		}
	}
}

// An agent that stays past the drain's end is left to the server's stop,
// and the log says how many stayed.
func TestDrainEndsWithItsContext(t *testing.T) {
	var out testenv.Buffer
	a := newGoAwayService(0, slog.New(slog.NewTextHandler(&out, nil)))
	st, _ := stream(goAwayVersion)
	if err := a.admit(st, "n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	a.Drain(ctx, time.Second)
	a.Wait()
	if !strings.Contains(out.String(), "still_connected=1") {
		t.Errorf("the log does not say one agent stayed:\n%s", out.String())
	}
}

// Over MaxAgents a new agent is told to go, overloaded; one that leaves
// makes room.
func TestMaxAgentsTurnsAway(t *testing.T) {
	var out testenv.Buffer
	a := newGoAwayService(2, slog.New(slog.NewTextHandler(&out, nil)))
	first, _ := stream(goAwayVersion)
	second, _ := stream(goAwayVersion)
	for _, st := range []*agentStream{first, second} {
		if err := a.admit(st, "n"); err != nil {
			t.Fatalf("admit under the cap: %v", err)
		}
	}
	third, thirdSent := stream(goAwayVersion)
	err := a.admit(third, "n3")
	g := thirdSent.goAways()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-agents") ||
		len(g) != 1 || g[0].Reason != ReasonOverloaded || g[0].ReconnectWithinMs != overloadedReconnectWithin.Milliseconds() {
		t.Errorf("the third agent: %v, sent %v; want ResourceExhausted naming --max-agents and one GoAway, overloaded", err, g)
	}
	if !strings.Contains(out.String(), "agents turned away") || !strings.Contains(out.String(), "max_agents=2") {
		t.Errorf("the log does not say an agent was turned away:\n%s", out.String())
	}
	a.leave(first)
	if err := a.admit(third, "n3"); err != nil {
		t.Errorf("admit once one left: %v; want room", err)
	}
	// Nothing is sent on a stream after its handler returned.
	a.leave(second)
	if err := second.Send(goAway(ReasonShuttingDown, 0)); !errors.Is(err, errStreamEnded) {
		t.Errorf("send after leave: %v; want errStreamEnded", err)
	}
}

const within = 30 * time.Second
