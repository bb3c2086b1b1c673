package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/restart"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestNewDesiredStateReportsUnchangedInstancesAgain covers a rollout rolled
// back at once: the server moved an instance to revision 3 (forgetting
// its state) and back to 2 before the agent saw 3, so the agent gets a
// desired state that asks for what already runs. Unless it reports the
// instance again, the server waits for it forever.
func TestNewDesiredStateReportsUnchangedInstancesAgain(t *testing.T) {
	ctx := context.Background()
	r := newReconciler(fakert.New(), "node1", t.TempDir(), time.Hour, clockwork.NewFakeClock(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := json.Marshal(spec.Container{Image: "hello:v2"})
	if err != nil {
		t.Fatal(err)
	}
	desired := func(gen uint64) *agentproto.DesiredState {
		return &agentproto.DesiredState{Generation: gen, Instances: []*agentproto.InstanceSpec{
			{Id: "i1", Project: "default", Deployment: "web", Revision: 2, SpecHash: "h2", Container: c}}}
	}
	r.setDesired(desired(1))
	r.reconcile(ctx)
	sent := r.drainOutbox()
	if len(sent) != 1 || sent[0].State != string(api.InstanceRunning) || sent[0].SpecHash != "h2" {
		t.Fatalf("after the first desired state the agent reported %v; want i1 running with hash h2", sent)
	}
	if again := r.drainOutbox(); len(again) != 0 {
		t.Fatalf("reported %v again with nothing new", again)
	}

	r.setDesired(desired(3)) // generation 2, revision 3, never arrived
	r.reconcile(ctx)
	sent = r.drainOutbox()
	if len(sent) != 1 || sent[0].InstanceId != "i1" || sent[0].State != string(api.InstanceRunning) || sent[0].SpecHash != "h2" {
		t.Errorf("after a new desired state asking for what runs, the agent reported %v; want i1 running with hash h2 again", sent)
	}
}

// TestRestartAndHealAreReportedNotFailed covers the restart path: a
// container removed from outside is recreated, one that exits is restarted;
// neither is reported failed, and each is reported once as an event, with
// the restart count.
func TestRestartAndHealAreReportedNotFailed(t *testing.T) {
	ctx := context.Background()
	rt := fakert.New()
	r := newReconciler(rt, "node1", t.TempDir(), time.Hour, clockwork.NewFakeClock(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := json.Marshal(spec.Container{Image: "hello:v1"})
	if err != nil {
		t.Fatal(err)
	}
	r.setDesired(&agentproto.DesiredState{Generation: 1, Instances: []*agentproto.InstanceSpec{
		{Id: "i1", Project: "default", Deployment: "web", Revision: 1, SpecHash: "h1", Container: c}}})
	r.reconcile(ctx)
	r.drainOutbox()
	only := func() string {
		t.Helper()
		cs, err := rt.List(ctx, "node1")
		if err != nil || len(cs) != 1 {
			t.Fatalf("containers %+v (%v); want one", cs, err)
		}
		return cs[0].ID
	}

	steps := []struct {
		name     string
		act      func(id string) error
		event    string
		restarts uint32
	}{
		{"removed outside dockfleet", rt.Delete, "removed outside dockfleet, recreated", 0},
		{"exited", func(id string) error { return rt.Kill(id, 137) }, "exited 137, restarted", 1},
	}
	for _, s := range steps {
		if err := s.act(only()); err != nil {
			t.Fatal(err)
		}
		r.reconcile(ctx)
		sent := r.drainOutbox()
		if len(sent) != 1 || sent[0].State != string(api.InstanceRunning) || len(sent[0].Events) != 1 || sent[0].Events[0] != s.event ||
			sent[0].Restarts != s.restarts {
			t.Fatalf("%s: reported %v; want i1 running, event %q, %d restarts", s.name, sent, s.event, s.restarts)
		}
		if cs, _ := rt.List(ctx, "node1"); len(cs) != 1 || !cs[0].Running {
			t.Fatalf("%s: containers %+v; want one running", s.name, cs)
		}
		r.reconcile(ctx)
		if again := r.drainOutbox(); len(again) != 0 {
			t.Fatalf("%s: reported %v again with nothing new", s.name, again)
		}
	}
}

// restartFixture is a reconciler on fakert with a fake clock, running one
// instance, i1, of container c, already reported.
type restartFixture struct {
	t     *testing.T
	rt    *fakert.Runtime
	clock *clockwork.FakeClock
	r     *reconciler
}

func newRestartFixture(t *testing.T, c spec.Container) *restartFixture {
	t.Helper()
	f := &restartFixture{t: t, rt: fakert.New(), clock: clockwork.NewFakeClock()}
	f.r = newReconciler(f.rt, "node1", t.TempDir(), time.Hour, f.clock, slog.New(slog.DiscardHandler))
	t.Cleanup(f.r.stop) // its backoff timers
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	f.r.setDesired(&agentproto.DesiredState{Generation: 1, Instances: []*agentproto.InstanceSpec{
		{Id: "i1", Project: "default", Deployment: "web", Revision: 1, SpecHash: "h1", Container: b}}})
	f.pass()
	f.r.drainOutbox()
	return f
}

// pass runs one reconcile pass and forgets the wake-ups it asked for, so
// that a later wake-up can only come from a backoff timer.
func (f *restartFixture) pass() {
	f.r.reconcile(context.Background())
	select {
	case <-f.r.wake:
	default:
	}
}

// container returns i1's one container.
func (f *restartFixture) container() container.State {
	f.t.Helper()
	cs, err := f.rt.List(context.Background(), "node1")
	if err != nil || len(cs) != 1 {
		f.t.Fatalf("containers %+v (%v); want one", cs, err)
	}
	return cs[0]
}

// report returns what the agent has to tell the server of i1 since the
// last call.
func (f *restartFixture) report() *agentproto.InstanceStatus {
	f.t.Helper()
	sent := f.r.drainOutbox()
	if len(sent) != 1 {
		f.t.Fatalf("reported %v; want one status of i1", sent)
	}
	return sent[0]
}

// TestRestartPolicies exits the container with each policy and code and
// checks, over two passes, whether the agent restarts it and what it reports.
func TestRestartPolicies(t *testing.T) {
	tests := []struct {
		policy  spec.RestartPolicy
		code    int
		restart bool
		state   api.InstanceState // reported once the passes are done
	}{
		{spec.RestartAlways, 0, true, api.InstanceRunning},
		{spec.RestartOnFailure, 0, false, api.InstanceStopped},
		{spec.RestartOnFailure, 2, true, api.InstanceRunning},
		{spec.RestartNever, 0, false, api.InstanceStopped},
		{spec.RestartNever, 2, false, api.InstanceFailed},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s exit %d", tt.policy, tt.code), func(t *testing.T) {
			f := newRestartFixture(t, spec.Container{Image: "hello:v1", RestartPolicy: tt.policy})
			c := f.container()
			if err := f.rt.Kill(c.ID, tt.code); err != nil {
				t.Fatal(err)
			}
			f.pass()
			st := f.report()
			f.pass()
			if again := f.r.drainOutbox(); len(again) != 0 {
				t.Errorf("the second pass reported %v; want nothing new", again)
			}
			now := f.container()
			if now.ID != c.ID || now.Running != tt.restart {
				t.Errorf("container %s running %v; want %s running %v", now.ID, now.Running, c.ID, tt.restart)
			}
			wantRestarts := uint32(0)
			if tt.restart {
				wantRestarts = 1
			}
			if st.State != string(tt.state) || st.Restarts != wantRestarts {
				t.Errorf("reported %s (%q), %d restarts; want %s, %d restarts", st.State, st.Reason, st.Restarts, tt.state, wantRestarts)
			}
			if !tt.restart && st.Reason != fmt.Sprintf("exited with code %d", tt.code) {
				t.Errorf("reported reason %q; want %q", st.Reason, fmt.Sprintf("exited with code %d", tt.code))
			}
		})
	}
}

// TestRestartBackoffAndCrashLoop crashes the container again and again: the
// first restart is immediate, each later one waits for its backoff on the
// agent's clock (reported starting meanwhile), and the exit after
// restart.Tolerance restarts in a row is reported as a crash loop.
func TestRestartBackoffAndCrashLoop(t *testing.T) {
	f := newRestartFixture(t, spec.Container{Image: "hello:v1"})
	for n := 1; n <= restart.Tolerance+1; n++ {
		c := f.container()
		if err := f.rt.Kill(c.ID, 1); err != nil {
			t.Fatal(err)
		}
		f.pass()
		st := f.report()
		wait := time.Duration(0)
		if n > 1 {
			wait = restart.FirstDelay << (n - 2)
		}
		if wait > 0 {
			crashLoop := n > restart.Tolerance
			if c := f.container(); c.Running {
				t.Fatalf("exit %d: restarted at once; want a wait of %v", n, wait)
			}
			wantState := api.InstanceStarting
			if crashLoop {
				wantState = api.InstanceFailed
			}
			if st.State != string(wantState) || strings.Contains(st.Reason, "crash-looping") != crashLoop {
				t.Fatalf("exit %d: reported %s (%q) while waiting; want %s, crash loop %v", n, st.State, st.Reason, wantState, crashLoop)
			}
			f.clock.Advance(wait - time.Nanosecond)
			f.pass()
			if c := f.container(); c.Running {
				t.Fatalf("exit %d: restarted %v before its backoff of %v ended", n, time.Nanosecond, wait)
			}
			f.clock.Advance(time.Nanosecond)
			select {
			case <-f.r.wake: // the backoff timer asks for the pass
			case <-time.After(time.Minute):
				t.Fatalf("exit %d: no pass asked for when the backoff of %v ended", n, wait)
			}
			f.pass()
			st = f.report()
		}
		if c := f.container(); !c.Running || st.State != string(api.InstanceRunning) || st.Restarts != uint32(n) {
			t.Fatalf("exit %d: container running %v, reported %s (%q), %d restarts; want running, %d restarts", n, c.Running, st.State, st.Reason, st.Restarts, n)
		}
	}
}

// TestDesiredCacheWriteFailureIsLogged gives the reconciler a data dir it
// cannot write to: the desired state is still taken, and the failure to
// cache it is logged, not dropped.
func TestDesiredCacheWriteFailureIsLogged(t *testing.T) {
	var logs testenv.Buffer
	dir := filepath.Join(t.TempDir(), "missing")
	r := newReconciler(fakert.New(), "node1", dir, time.Hour, clockwork.NewFakeClock(), slog.New(slog.NewTextHandler(&logs, nil)))
	if !r.setDesired(redeliveryState(t, 1, 1, "h1")) {
		t.Fatal("the desired state was not taken")
	}
	if got := logs.String(); !strings.Contains(got, "caching the desired state") || !strings.Contains(got, "generation=1") {
		t.Errorf("log %q; want the failure to cache generation 1", got)
	}
}
