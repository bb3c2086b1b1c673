package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/restart"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// TestDecide covers each case of one instance's pass: what it removes,
// which status it records, and which action it takes or waits for.
func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	started := now.Add(-time.Minute)
	want := func(startFirst, checked bool, policy spec.RestartPolicy) wanted {
		w := wanted{spec: &agentproto.InstanceSpec{Id: "i1", SpecHash: "h2", StartFirst: startFirst},
			container: spec.Container{Image: "hello:v2", RestartPolicy: policy}}
		if checked {
			w.container.HealthCheck = &spec.HealthCheck{}
		}
		return w
	}
	ctr := func(id, hash string, running bool) container.State {
		c := container.State{ID: id, Running: running, Labels: map[string]string{container.LabelSpecHash: hash}}
		if !running {
			c.StartedAt, c.FinishedAt, c.ExitCode = started, now, 1
		}
		return c
	}
	neverStarted := ctr("c2", "h2", false)
	neverStarted.StartedAt, neverStarted.Error = time.Time{}, "no such image"
	cleanExit := ctr("c2", "h2", false)
	cleanExit.ExitCode = 0
	// backingOff has restarted once and waits FirstDelay before the next attempt.
	var backingOff restart.Tracker
	backingOff.Restarted(now)
	backingOff.Exited(spec.RestartAlways, 1, time.Second)
	// crashLooping has restarted restart.Tolerance times in a row, its backoff over.
	var crashLooping restart.Tracker
	for range restart.Tolerance {
		crashLooping.Restarted(now.Add(-time.Hour))
	}
	running := observed{state: api.InstanceRunning, containerID: "c2", hash: "h2"}
	healthy := observed{state: api.InstanceHealthy, containerID: "c2", hash: "h2"}

	tests := []struct {
		name string
		k    known
		w    wanted
		cs   []container.State
		// want: the plan's fields checked (restarts are checked apart)
		remove    []string
		stopWatch bool
		status    *statusChange
		wait      time.Duration
		act       action
		target    string
		event     string
		running   bool
	}{
		{name: "nothing yet: create",
			k: known{status: observed{state: api.InstancePending}}, w: want(false, false, ""),
			stopWatch: true, act: actCreate},
		{name: "its container removed from outside: recreate and say so",
			k: known{status: running, restartsOf: "h2"}, w: want(false, false, ""),
			stopWatch: true, act: actCreate, event: eventRecreated},
		{name: "the previous spec's container gone: no event",
			k: known{status: observed{state: api.InstanceRunning, containerID: "c1", hash: "h1"}}, w: want(false, false, ""),
			stopWatch: true, act: actCreate},
		{name: "stop-first: the stale container goes before the new one comes",
			k: known{status: observed{state: api.InstanceRunning, containerID: "c1", hash: "h1"}}, w: want(false, false, ""),
			cs:     []container.State{ctr("c1", "h1", true)},
			remove: []string{"c1"}, stopWatch: true, act: actCreate},
		{name: "start-first: the stale container stays until the new one runs",
			k: known{status: observed{state: api.InstanceRunning, containerID: "c1", hash: "h1"}}, w: want(true, false, ""),
			cs:        []container.State{ctr("c1", "h1", true)},
			stopWatch: true, act: actCreate},
		{name: "start-first: a running unchecked replacement takes over",
			k: known{status: running, restartsOf: "h2"}, w: want(true, false, ""),
			cs:     []container.State{ctr("c1", "h1", true), ctr("c2", "h2", true)},
			remove: []string{"c1"}, running: true},
		{name: "start-first: a checked replacement not yet healthy waits",
			k: known{status: running, restartsOf: "h2", watched: "c2"}, w: want(true, true, ""),
			cs:      []container.State{ctr("c1", "h1", true), ctr("c2", "h2", true)},
			running: true},
		{name: "start-first: a healthy replacement takes over",
			k: known{status: healthy, restartsOf: "h2", watched: "c2"}, w: want(true, true, ""),
			cs:     []container.State{ctr("c1", "h1", true), ctr("c2", "h2", true)},
			remove: []string{"c1"}, running: true},
		{name: "a second container of the spec is stale",
			k: known{status: running, restartsOf: "h2"}, w: want(false, false, ""),
			cs:     []container.State{ctr("c2", "h2", true), ctr("c3", "h2", true)},
			remove: []string{"c3"}, running: true},
		{name: "running unchecked, already reported: nothing to do",
			k: known{status: running, restartsOf: "h2"}, w: want(false, false, ""),
			cs: []container.State{ctr("c2", "h2", true)}, running: true},
		{name: "running unchecked, reported starting: now running",
			k: known{status: observed{state: api.InstanceStarting, hash: "h2"}, restartsOf: "h2"}, w: want(false, false, ""),
			cs:     []container.State{ctr("c2", "h2", true)},
			status: &statusChange{state: api.InstanceRunning, containerID: "c2"}, running: true},
		{name: "running checked, unwatched: watch it",
			k: known{status: observed{state: api.InstanceStarting, hash: "h2"}, restartsOf: "h2"}, w: want(false, true, ""),
			cs:        []container.State{ctr("c2", "h2", true)},
			stopWatch: true, status: &statusChange{state: api.InstanceRunning, containerID: "c2"}, act: actWatch, target: "c2", running: true},
		{name: "running checked, watch of another container: watch this one, keep the health reported",
			k: known{status: healthy, restartsOf: "h2", watched: "c0"}, w: want(false, true, ""),
			cs:        []container.State{ctr("c2", "h2", true)},
			stopWatch: true, act: actWatch, target: "c2", running: true},
		{name: "running checked, watched: nothing to do",
			k: known{status: healthy, restartsOf: "h2", watched: "c2"}, w: want(false, true, ""),
			cs: []container.State{ctr("c2", "h2", true)}, running: true},
		{name: "exited, policy always: restart at once",
			k: known{status: running, restartsOf: "h2"}, w: want(false, false, ""),
			cs:        []container.State{ctr("c2", "h2", false)},
			stopWatch: true, status: &statusChange{api.InstanceStarting, "exited with code 1; restarting", "c2"}, act: actRestart, target: "c2"},
		{name: "exited, restarted before: wait out the backoff",
			k: known{status: running, restarts: backingOff, restartsOf: "h2"}, w: want(false, false, ""),
			cs:        []container.State{ctr("c2", "h2", false)},
			stopWatch: true, status: &statusChange{api.InstanceStarting, "exited with code 1; restarting", "c2"}, wait: restart.FirstDelay},
		{name: "exited, a new spec's history starts afresh",
			k: known{status: running, restarts: backingOff, restartsOf: "h1"}, w: want(false, false, ""),
			cs:        []container.State{ctr("c2", "h2", false)},
			stopWatch: true, status: &statusChange{api.InstanceStarting, "exited with code 1; restarting", "c2"}, act: actRestart, target: "c2"},
		{name: "exited, crash-looping: failed, and restarted",
			k: known{status: running, restarts: crashLooping, restartsOf: "h2"}, w: want(false, false, ""),
			cs:        []container.State{ctr("c2", "h2", false)},
			stopWatch: true, status: &statusChange{api.InstanceFailed, "exited with code 1; crash-looping: restarted 3 times in a row, restarting with backoff up to 1m0s", "c2"},
			act: actRestart, target: "c2"},
		{name: "exited 0, policy on-failure: stopped",
			k: known{status: running, restartsOf: "h2"}, w: want(false, false, spec.RestartOnFailure),
			cs:        []container.State{cleanExit},
			stopWatch: true, status: &statusChange{api.InstanceStopped, "exited with code 0", "c2"}},
		{name: "exited 1, policy never: failed",
			k: known{status: running, restartsOf: "h2"}, w: want(false, false, spec.RestartNever),
			cs:        []container.State{ctr("c2", "h2", false)},
			stopWatch: true, status: &statusChange{api.InstanceFailed, "exited with code 1", "c2"}},
		{name: "created, never started: failed with the runtime's reason, and started",
			k: known{status: observed{state: api.InstanceStarting, hash: "h2"}, restartsOf: "h2"}, w: want(false, false, spec.RestartNever),
			cs:        []container.State{neverStarted},
			stopWatch: true, status: &statusChange{api.InstanceFailed, "no such image", "c2"}, act: actRestart, target: "c2"},
		{name: "created, never started, failure already reported: keep its reason",
			k: known{status: observed{state: api.InstanceFailed, reason: "start: port in use", containerID: "c2", hash: "h2"}, restartsOf: "h2"},
			w: want(false, false, ""), cs: []container.State{neverStarted},
			stopWatch: true, act: actRestart, target: "c2"},
		{name: "gone while backing off: wait, touch nothing",
			k: known{status: observed{state: api.InstanceFailed, hash: "h2"}, restarts: backingOff, restartsOf: "h2", watched: "c2"}, w: want(false, true, ""),
			wait: restart.FirstDelay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decide(tt.k, tt.w, tt.cs, now)
			var removed []string
			for _, c := range p.remove {
				removed = append(removed, c.ID)
			}
			target := ""
			if p.target != nil {
				target = p.target.ID
			}
			if !reflect.DeepEqual(removed, tt.remove) || p.stopWatch != tt.stopWatch || !reflect.DeepEqual(p.status, tt.status) ||
				p.wait != tt.wait || p.act != tt.act || target != tt.target || p.event != tt.event || p.running != tt.running {
				t.Errorf("got remove %v, stop watch %v, status %+v, wait %v, action %d on %q, event %q, running %v;\n"+
					"want remove %v, stop watch %v, status %+v, wait %v, action %d on %q, event %q, running %v",
					removed, p.stopWatch, p.status, p.wait, p.act, target, p.event, p.running,
					tt.remove, tt.stopWatch, tt.status, tt.wait, tt.act, tt.target, tt.event, tt.running)
			}
			if p.restartsOf != "h2" {
				t.Errorf("restart history of spec %q; want h2's", p.restartsOf)
			}
		})
	}
}

// TestDecideLeavesItsInputAlone checks that decide is pure: the exit it
// counts changes the plan's restart history, not the instance's.
func TestDecideLeavesItsInputAlone(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	var tr restart.Tracker
	for range restart.Tolerance {
		tr.Restarted(now.Add(-time.Hour))
	}
	before := tr
	c := container.State{ID: "c1", Labels: map[string]string{container.LabelSpecHash: "h1"},
		StartedAt: now.Add(-restart.ResetAfter), FinishedAt: now, ExitCode: 1}
	w := wanted{spec: &agentproto.InstanceSpec{Id: "i1", SpecHash: "h1"}, container: spec.Container{Image: "hello:v1"}}
	p := decide(known{restarts: tr, restartsOf: "h1"}, w, []container.State{c}, now)
	if tr != before {
		t.Errorf("the input's restart history changed to %+v; want %+v", tr, before)
	}
	if p.restarts.Streak() != 0 || p.status == nil || p.status.state != api.InstanceStarting {
		t.Errorf("after a run of %v the plan has streak %d, status %+v; want streak 0 (reset), starting", restart.ResetAfter, p.restarts.Streak(), p.status)
	}
}
