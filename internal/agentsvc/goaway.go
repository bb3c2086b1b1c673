package agentsvc

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// Why a server tells an agent to go (GoAway.reason).
const (
	ReasonShuttingDown = "shutting down"
	ReasonOverloaded   = "overloaded"
)

// overloadedReconnectWithin is the GoAway.reconnect_within of an agent
// turned away by MaxAgents: it goes to another server at once, give or
// take the spread that keeps a crowd from arriving there together.
const overloadedReconnectWithin = 5 * time.Second

// goAwayVersion is the first agent protocol version that knows GoAway.
const goAwayVersion = 3

// drainSenders is how many GoAways Drain sends at once: a send blocks only
// on an agent that reads nothing, and the others must not wait for it.
const drainSenders = 32

// errStreamEnded refuses a send on a stream whose handler returned: gRPC
// allows none.
var errStreamEnded = errors.New("agent stream ended")

// agentStream is one agent's stream as the service holds it. Its sends are
// serialized, as gRPC needs: the fan-out's sender and Drain's GoAway may
// send at once. None goes out after its handler returned.
type agentStream struct {
	stream  agentproto.Agent_ConnectServer
	version uint32 // the agent's protocol version

	mu    sync.Mutex
	ended bool
	// welcomed is set once the agent was sent Welcome: Trust may follow.
	welcomed bool

	// asked is set, under Service.streamsMu, once Drain sent it GoAway.
	asked bool
}

// Send sends m on the stream, unless its handler returned.
func (s *agentStream) Send(m *agentproto.ServerMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return errStreamEnded
	}
	return s.stream.Send(m)
}

// end marks the stream's handler as returning: nothing is sent after it.
func (s *agentStream) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
}

func goAway(reason string, within time.Duration) *agentproto.ServerMessage {
	return &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Goaway{Goaway: &agentproto.GoAway{
		Reason: reason, ReconnectWithinMs: within.Milliseconds()}}}
}

// admit registers st as a connected agent's stream, or, while the service
// drains or holds MaxAgents streams, tells the agent to go and returns the
// error that ends its stream.
func (a *Service) admit(st *agentStream, nodeID string) error {
	a.streamsMu.Lock()
	draining, full := a.draining, a.maxAgents > 0 && len(a.streams) >= a.maxAgents
	if !draining && !full {
		a.streams[st] = true
	}
	a.streamsMu.Unlock()
	switch {
	case draining:
		_ = st.Send(goAway(ReasonShuttingDown, a.drainWithin))
		return status.Error(codes.Unavailable, "this server is shutting down; connect to another")
	case full:
		a.overloads.Warn("agents turned away: this server holds its --max-agents; they connect to another server",
			"max_agents", a.maxAgents, "node_id", nodeID)
		_ = st.Send(goAway(ReasonOverloaded, overloadedReconnectWithin))
		return status.Errorf(codes.ResourceExhausted, "this server holds its maximum of %d agents (--max-agents); connect to another", a.maxAgents)
	}
	return nil
}

// leave unregisters st, whose handler returns.
func (a *Service) leave(st *agentStream) {
	st.end()
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	delete(a.streams, st)
	if st.asked {
		if a.asked--; a.asked == 0 && a.drained != nil {
			close(a.drained)
			a.drained = nil
		}
	}
}

// Drain tells every connected agent to go to another server, each within a
// random time up to three quarters of within (GoAway), turns away the agents that connect
// from now on, and waits until the agents told have left, or ctx ends. It
// logs how many were told and how many left. Agents too old to know GoAway
// are not told: they stay until the server stops, as before GoAway.
//
// A GoAway to an agent that reads nothing can block; Drain returns at the
// end of ctx all the same, and such sends end when the gRPC server stops.
// Wait waits for them.
func (a *Service) Drain(ctx context.Context, within time.Duration) {
	start := time.Now()
	a.streamsMu.Lock()
	// Agents pick their moment within the first three quarters of the
	// window: the last quarter is for the last of them to close its
	// stream, which a loaded machine takes a while to see (one agent in
	// 16 was still closing at the end of a 2 s window).
	a.draining, a.drainWithin = true, within-within/4
	var told []*agentStream
	old := 0
	for st := range a.streams {
		if st.version < goAwayVersion {
			old++
			continue
		}
		st.asked = true
		told = append(told, st)
	}
	a.asked = len(told)
	drained := make(chan struct{})
	if a.asked == 0 {
		close(drained)
	} else {
		a.drained = drained
	}
	a.streamsMu.Unlock()
	a.log.Info("draining agents: telling them to move to another server", "agents", len(told), "within", within,
		"too_old_to_tell", old)

	msg := goAway(ReasonShuttingDown, a.drainWithin)
	work := make(chan *agentStream)
	for range min(drainSenders, len(told)) {
		a.senders.Go(func() {
			for st := range work {
				_ = st.Send(msg) // a stream that failed is gone already
			}
		})
	}
	func() {
		defer close(work)
		for _, st := range told {
			select {
			case work <- st:
			case <-ctx.Done():
				return
			}
		}
	}()

	select {
	case <-drained:
		a.log.Info("agents drained", "agents", len(told), "took", time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
		a.streamsMu.Lock()
		left := a.asked
		a.streamsMu.Unlock()
		a.log.Warn("agents still connected at the end of the drain; cutting them off", "agents", len(told), "still_connected", left,
			"within", within)
	}
}

// Wait waits for the GoAways Drain was still sending when it returned; call
// it once the gRPC server stopped, which ends them.
func (a *Service) Wait() {
	a.senders.Wait()
}

// toldToGo reports whether Drain told st's agent to go.
func (a *Service) toldToGo(st *agentStream) bool {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	return st.asked
}
