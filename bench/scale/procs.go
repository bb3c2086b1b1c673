package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

// simEvent is one line of `dockfleet sim --events` (internal/sim.Event).
type simEvent struct {
	T          int64  `json:"t"`
	Agent      string `json:"agent"`
	Event      string `json:"event"`
	Generation uint64 `json:"generation"`
	Instances  int    `json:"instances"`
	Error      string `json:"error"`
}

// desired is a desired state an agent took and acked.
type desired struct {
	at         time.Time
	generation uint64
	instances  int
}

// agentRecord is what the events told of one simulated agent.
type agentRecord struct {
	connected      bool
	connects       int
	lastConnect    time.Time
	lastDisconnect time.Time
	disconnects    int
	desired        []desired
}

// tracker follows every sim process's events.
type tracker struct {
	mu     sync.Mutex
	agents map[string]*agentRecord
	failed []string // "agent: error" of agents that stopped for good
	bad    int      // lines that were not events
}

func newTracker() *tracker { return &tracker{agents: map[string]*agentRecord{}} }

func (t *tracker) line(b []byte) {
	var e simEvent
	if err := json.Unmarshal(b, &e); err != nil || e.Agent == "" {
		t.mu.Lock()
		t.bad++
		t.mu.Unlock()
		return
	}
	at := time.Unix(0, e.T)
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.agents[e.Agent]
	if a == nil {
		a = &agentRecord{}
		t.agents[e.Agent] = a
	}
	switch e.Event {
	case "connected":
		a.connected, a.lastConnect = true, at
		a.connects++
	case "disconnected":
		a.connected, a.lastDisconnect = false, at
		a.disconnects++
	case "desired":
		a.desired = append(a.desired, desired{at: at, generation: e.Generation, instances: e.Instances})
	case "failed":
		t.failed = append(t.failed, e.Agent+": "+e.Error)
	}
}

// failure reports an agent that stopped for good.
func (t *tracker) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.failed) == 0 {
		return nil
	}
	return fmt.Errorf("%d simulated agents failed; first: %s", len(t.failed), t.failed[0])
}

// connectedSince returns, for each agent connected now whose latest
// connection came at or after since, when it came; and how many agents
// are connected now in all.
func (t *tracker) connectedSince(since time.Time) (times []time.Time, connected int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.agents {
		if !a.connected {
			continue
		}
		connected++
		if !a.lastConnect.Before(since) {
			times = append(times, a.lastConnect)
		}
	}
	return times, connected
}

// firstDesired returns, for each agent, when it first acked a desired
// state of at least one instance at or after since.
func (t *tracker) firstDesired(since time.Time) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []time.Time
	for _, a := range t.agents {
		var first time.Time
		for _, d := range a.desired {
			if d.instances > 0 && !d.at.Before(since) && (first.IsZero() || d.at.Before(first)) {
				first = d.at
			}
		}
		if !first.IsZero() {
			out = append(out, first)
		}
	}
	return out
}

// disconnectsSince counts the agents whose stream ended at or after since.
func (t *tracker) disconnectsSince(since time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, a := range t.agents {
		if a.disconnects > 0 && !a.lastDisconnect.Before(since) {
			n++
		}
	}
	return n
}

// latest is the latest of times; zero for none.
func latest(times []time.Time) time.Time {
	if len(times) == 0 {
		return time.Time{}
	}
	return slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
}
