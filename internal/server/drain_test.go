package server

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
)

// reporter answers the desired states a rawNode gets as an agent would,
// so that a test decides when each instance becomes healthy: it reports
// each new instance running or, while held, starting.
type reporter struct {
	rn  *rawNode
	ctx context.Context

	// keep, while set, keeps the node's containers counted as they were:
	// an agent that has yet to remove what it no longer runs.
	keep atomic.Bool

	mu       sync.Mutex
	hold     bool
	desired  []*agentproto.InstanceSpec
	reported map[string]api.InstanceState
}

func (f *abuseFleet) reportingNode(t *testing.T, name string) *reporter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &reporter{rn: f.startRawNode(t, name, nodeSource), ctx: ctx, reported: map[string]api.InstanceState{}}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-r.rn.desired:
				r.mu.Lock()
				r.desired = d.Instances
				r.mu.Unlock()
				// As an agent does once it has reconciled: one container
				// per instance, none for those it no longer has.
				if !r.keep.Load() || int32(len(d.Instances)) > r.rn.containers.Load() {
					r.rn.containers.Store(int32(len(d.Instances)))
				}
				r.report()
			}
		}
	}()
	return r
}

// report reports each instance of the last desired state running, or
// starting while r is held, unless it did already.
func (r *reporter) report() {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := api.InstanceRunning
	if r.hold {
		state = api.InstanceStarting
	}
	for _, in := range r.desired {
		key := in.Id + "/" + in.SpecHash
		if r.reported[key] == state || r.reported[key] == api.InstanceRunning {
			continue
		}
		r.reported[key] = state
		m := &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: &agentproto.InstanceStatus{
			InstanceId: in.Id, SpecHash: in.SpecHash, State: string(state), ObservedAt: time.Now().UnixNano()}}}
		select {
		case r.rn.send <- m:
		case <-r.ctx.Done():
			return
		}
	}
}

// setHold holds r's new instances in starting, or releases them all.
func (r *reporter) setHold(hold bool) {
	r.mu.Lock()
	r.hold = hold
	r.mu.Unlock()
	r.report()
}

// instancesOn lists the instances of deployment name, by node name.
func instancesOn(t *testing.T, c *client.Client, name string) map[string][]api.Instance {
	t.Helper()
	ins, err := c.ListInstances(context.Background(), api.DefaultProject, name)
	if err != nil {
		t.Fatal(err)
	}
	on := map[string][]api.Instance{}
	for _, in := range ins {
		on[in.NodeName] = append(on[in.NodeName], in)
	}
	return on
}

func count(on map[string][]api.Instance) int {
	n := 0
	for _, ins := range on {
		n += len(ins)
	}
	return n
}

// A drain moves a node's replicated instances first, each stopping only
// once its replacement elsewhere runs, then stops its global ones; the
// drained node takes nothing new until uncordoned, when its global
// instance returns.
func TestDrainMovesReplicatedThenGlobal(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	nodes := map[string]*reporter{}
	for _, name := range []string{"a", "b", "c"} {
		nodes[name] = f.reportingNode(t, name)
	}
	docs := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web}\n" +
		"spec:\n  mode: replicated\n  replicas: 2\n  container: {image: hello:v1}\n" +
		"  update: {minHealthyTime: 0s, maxUnavailable: 1}\n" +
		"---\napiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: agent}\n" +
		"spec:\n  container: {image: hello:v1}\n  update: {minHealthyTime: 0s}\n"
	if _, err := f.api.Apply(ctx, "drain.yaml", "", []byte(docs)); err != nil {
		t.Fatal(err)
	}
	running := func(on map[string][]api.Instance, want int) bool {
		n := 0
		for _, ins := range on {
			for _, in := range ins {
				if in.Revision == 1 && in.State == api.InstanceRunning {
					n++
				}
			}
		}
		return n == want
	}
	waitFor(t, "2 web and 3 agent instances running", func() bool {
		return running(instancesOn(t, f.api, "web"), 2) && running(instancesOn(t, f.api, "agent"), 3)
	})
	var drained string
	for name, ins := range instancesOn(t, f.api, "web") {
		if len(ins) > 0 {
			drained = name
		}
	}
	moving := instancesOn(t, f.api, "web")[drained]
	for name, n := range nodes {
		n.setHold(name != drained)
	}

	n, err := f.api.DrainNode(ctx, drained)
	if err != nil || n.Scheduling != api.NodeDraining {
		t.Fatalf("DrainNode(%s) = %+v, %v; want draining", drained, n, err)
	}
	// The replacements start elsewhere and are held in starting; the
	// instances on the drained node keep running meanwhile.
	waitFor(t, "the replacements to report starting", func() bool {
		starting := 0
		for name, ins := range instancesOn(t, f.api, "web") {
			for _, in := range ins {
				if name != drained && in.State == api.InstanceStarting {
					starting++
				}
			}
		}
		return starting == len(moving)
	})
	// A new global deployment placed on the other nodes shows that a
	// placement pass ran after the starting reports; the draining node
	// gets none of it.
	more := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: more}\n" +
		"spec:\n  container: {image: hello:v1}\n"
	if _, err := f.api.Apply(ctx, "more.yaml", "", []byte(more)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new global deployment on the other nodes", func() bool { return count(instancesOn(t, f.api, "more")) == 2 })
	if got := instancesOn(t, f.api, "more")[drained]; len(got) != 0 {
		t.Errorf("a new global instance was placed on the draining node: %v", got)
	}
	if got := len(instancesOn(t, f.api, "web")[drained]); got != len(moving) {
		t.Fatalf("%d web instance(s) left the draining node %s before their replacements ran; want %d kept", len(moving)-got, drained, len(moving))
	}
	if got := len(instancesOn(t, f.api, "agent")[drained]); got != 1 {
		t.Fatalf("the global instance on %s stopped before the replicated ones moved", drained)
	}

	// Until its agent has removed the containers, the node is not
	// drained, though the server placed nothing there any more.
	nodes[drained].keep.Store(true)
	for _, n := range nodes {
		n.setHold(false)
	}
	waitFor(t, "no instance left on "+drained, func() bool {
		return len(instancesOn(t, f.api, "web")[drained]) == 0 && len(instancesOn(t, f.api, "agent")[drained]) == 0
	})
	emptied := time.Now()
	waitFor(t, "two heartbeats of "+drained+" since", func() bool {
		n, err := f.api.GetNode(ctx, drained)
		return err == nil && n.LastSeen.After(emptied.Add(2*testHeartbeat))
	})
	if n, err := f.api.GetNode(ctx, drained); err != nil || n.Scheduling != api.NodeDraining {
		t.Fatalf("node %s while its agent still runs containers: %+v, %v; want draining", drained, n, err)
	}
	nodes[drained].keep.Store(false)
	nodes[drained].rn.containers.Store(0)
	waitFor(t, "node "+drained+" drained", func() bool {
		web, agent := instancesOn(t, f.api, "web"), instancesOn(t, f.api, "agent")
		if len(agent[drained]) == 0 && len(web[drained]) > 0 {
			t.Fatalf("the global instance on %s stopped while %d web instance(s) ran there", drained, len(web[drained]))
		}
		if count(web) < 2 {
			t.Fatalf("web had %d instances during the drain; want 2 at least", count(web))
		}
		n, err := f.api.GetNode(ctx, drained)
		if err != nil {
			t.Fatal(err)
		}
		return n.Scheduling == api.NodeDrained
	})
	if web := instancesOn(t, f.api, "web"); len(web[drained]) != 0 || count(web) != 2 {
		t.Errorf("web after the drain: %v; want 2 instances, none on %s", web, drained)
	}

	n, err = f.api.UncordonNode(ctx, drained)
	if err != nil || n.Scheduling != "" {
		t.Fatalf("UncordonNode(%s) = %+v, %v; want schedulable", drained, n, err)
	}
	waitFor(t, "the global instances back on "+drained, func() bool {
		return len(instancesOn(t, f.api, "agent")[drained]) == 1 && len(instancesOn(t, f.api, "more")[drained]) == 1
	})
}

// A cordoned node keeps what it runs and takes nothing new.
func TestCordonKeepsInstances(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	f.reportingNode(t, "a")
	f.reportingNode(t, "b")
	doc := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: agent}\n" +
		"spec:\n  container: {image: hello:v1}\n"
	if _, err := f.api.Apply(ctx, "agent.yaml", "", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an instance on each node", func() bool { return count(instancesOn(t, f.api, "agent")) == 2 })
	if n, err := f.api.CordonNode(ctx, "a"); err != nil || n.Scheduling != api.NodeCordoned {
		t.Fatalf("CordonNode(a) = %+v, %v; want cordoned", n, err)
	}
	f.reportingNode(t, "c")
	doc2 := strings.Replace(doc, "name: agent", "name: second", 1)
	if _, err := f.api.Apply(ctx, "second.yaml", "", []byte(doc2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second deployment on b and c", func() bool { return count(instancesOn(t, f.api, "second")) == 2 })
	if got := instancesOn(t, f.api, "second")["a"]; len(got) != 0 {
		t.Errorf("a new instance was placed on the cordoned node a: %v", got)
	}
	if got := instancesOn(t, f.api, "agent"); len(got["a"]) != 1 || count(got) != 3 {
		t.Errorf("agent after cordoning a and adding c: %v; want one on each of a, b, c", got)
	}
	nodes, err := f.api.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if want := map[bool]api.NodeScheduling{true: api.NodeCordoned}[n.Name == "a"]; n.Scheduling != want {
			t.Errorf("node %s lists scheduling %q; want %q", n.Name, n.Scheduling, want)
		}
	}
}

// Bad input: an unknown node, a revoked one: a clear error, nothing changed.
func TestNodeSchedulingRefusals(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	f.reportingNode(t, "gone")
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"drain", func() error { _, err := f.api.DrainNode(ctx, "ghost"); return err }},
		{"cordon", func() error { _, err := f.api.CordonNode(ctx, "ghost"); return err }},
		{"uncordon", func() error { _, err := f.api.UncordonNode(ctx, "ghost"); return err }},
		{"rm", func() error { return f.api.DeleteNode(ctx, "ghost", false) }},
	} {
		if err := tc.call(); !client.IsNotFound(err) || !strings.Contains(err.Error(), `no node with ID or name "ghost"`) ||
			!strings.Contains(err.Error(), "dockfleet nodes") {
			t.Errorf("%s of an unknown node = %v; want not found, naming it and how to list the nodes", tc.name, err)
		}
	}
	before, err := f.api.RevokeNode(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() (api.Node, error)
	}{
		{"drain", func() (api.Node, error) { return f.api.DrainNode(ctx, "gone") }},
		{"cordon", func() (api.Node, error) { return f.api.CordonNode(ctx, "gone") }},
		{"uncordon", func() (api.Node, error) { return f.api.UncordonNode(ctx, "gone") }},
	} {
		_, err := tc.call()
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 409 || !strings.Contains(err.Error(), "is revoked") || !strings.Contains(err.Error(), "node rm gone") {
			t.Errorf("%s of a revoked node = %v; want a conflict saying to remove it with node rm", tc.name, err)
		}
	}
	// Not the version: the node's last status, written in a batch, may
	// land after the revocation (the store keeps the node revoked).
	after, err := f.api.GetNode(ctx, "gone")
	if err != nil || after.Scheduling != before.Scheduling || after.State != api.NodeRevoked || !maps.Equal(after.Labels, before.Labels) {
		t.Errorf("revoked node after the refusals = %+v, %v; want unchanged: revoked, scheduling %q, labels %v", after, err, before.Scheduling, before.Labels)
	}
}
