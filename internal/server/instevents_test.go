package server

import (
	"context"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/controller"
)

// An agent's own actions on its instances (restarted, recreated) become
// events with its restart count on the instance; a node that reports on
// another node's instance records nothing, and what one report carries is
// bounded in number and size, with control characters escaped.
func TestAgentInstanceEvents(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	stream, byNode := f.twoNodesOneInstanceEach(t)
	many := make([]string, 50)
	for i := range many {
		many[i] = "exited 137, restarted"
	}
	many[0] = "\x1b[2J" + strings.Repeat("x", 10_000)
	for _, in := range []api.Instance{byNode["b"], byNode["a"]} { // b's is forged
		err := stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: &agentproto.InstanceStatus{
			InstanceId: in.ID, SpecHash: in.SpecHash, State: string(api.InstanceRunning), Restarts: 4_000_000_000, Events: many}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	var evs []api.Event
	waitFor(t, "node a's events", func() bool {
		all, err := f.api.ListEvents(ctx, api.DefaultProject, "both", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		evs = evs[:0]
		for _, e := range all {
			if strings.HasPrefix(e.Type, "instance.") {
				evs = append(evs, e)
			}
		}
		return len(evs) > 0
	})
	if len(evs) != controller.MaxEventsPerStatus {
		t.Errorf("%d instance events; want %d (the bound per report)", len(evs), controller.MaxEventsPerStatus)
	}
	for _, e := range evs {
		if !strings.Contains(e.Message, byNode["a"].ID+" on a: ") || len(e.Message) > 300 || strings.ContainsRune(e.Message, 0x1b) {
			t.Errorf("event %q (%d bytes); want one on a's instance, short, escaped", e.Message[:min(len(e.Message), 80)], len(e.Message))
		}
	}
	if evs[len(evs)-1].Type != "instance.restarted" {
		t.Errorf("event type %q; want instance.restarted", evs[len(evs)-1].Type)
	}
	ins, err := f.api.ListInstances(ctx, api.DefaultProject, "both")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		switch {
		case in.NodeName == "a" && in.Restarts <= 0:
			t.Errorf("node a's instance: %d restarts; want a positive count", in.Restarts)
		case in.NodeName == "b" && (in.Restarts != 0 || in.State != api.InstancePending):
			t.Errorf("node b's instance after a's forged report: %s, %d restarts; want pending, 0", in.State, in.Restarts)
		}
	}
}
