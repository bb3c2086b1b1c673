package controller

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// The controller never sends a desired state over MaxDesiredState, which
// the agent would refuse, ending its stream; it says so, sparsely.
func TestOversizeDesiredStateIsNotSent(t *testing.T) {
	var logs testenv.Buffer
	c := New(nil, nil, nil, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	small := &agentproto.DesiredState{Instances: []*agentproto.InstanceSpec{{Id: "a", Container: make([]byte, 1<<20)}}}
	if c.desiredTooLarge("n1", small) {
		t.Errorf("a desired state of 1 MiB is too large; want it sent")
	}
	big := &agentproto.DesiredState{Instances: []*agentproto.InstanceSpec{
		{Id: "a", Container: make([]byte, 2<<20)}, {Id: "b", Container: make([]byte, 2<<20)}}}
	for range 3 {
		if !c.desiredTooLarge("n1", big) {
			t.Errorf("a desired state of 4 MiB is not too large; want it held back")
		}
	}
	if n := strings.Count(logs.String(), "not sending a node its desired state"); n != 1 {
		t.Errorf("logged %d times for 3 held back; want once:\n%s", n, logs.String())
	}
}
