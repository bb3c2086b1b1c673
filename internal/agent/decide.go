package agent

import (
	"cmp"
	"fmt"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/restart"
)

// known is what an instance knows of itself that a pass decides on.
type known struct {
	status observed
	// restarts is the restart history of the spec restartsOf.
	restarts   restart.Tracker
	restartsOf string
	// watched is the container the running health watch probes; "" if none.
	watched string
}

// action is the one runtime step a pass takes for an instance, after
// removing what it replaces.
type action int

const (
	actNone    action = iota
	actCreate         // pull, create and start a new container
	actRestart        // start the exited container again (replace it if that fails)
	actWatch          // start the health watch of the running container
)

// statusChange is a state to record for the instance's spec.
type statusChange struct {
	state               api.InstanceState
	reason, containerID string
}

// plan is what one pass does for one instance, in this order: count the
// exit in the restart history, remove the stale containers, stop the
// health watch, record the status, then either wait out the backoff or
// take the action.
type plan struct {
	restarts   restart.Tracker
	restartsOf string
	remove     []container.State
	stopWatch  bool
	status     *statusChange
	// wait, if positive, is the backoff left before the action may run:
	// the pass takes none and asks for another once it has elapsed.
	wait   time.Duration
	act    action
	target *container.State // the container actRestart restarts or actWatch watches
	event  string           // what actCreate reports once its container runs
	// running says the instance's container runs: the pass counts it.
	running bool
}

// decide is the instance's policy for one pass: given what it knows of
// itself, its wanted spec and its containers on the node, what to do now.
// It is pure, so every case can be a table test; the instance runs the plan.
func decide(k known, w wanted, cs []container.State, now time.Time) plan {
	p := plan{restarts: k.restarts, restartsOf: k.restartsOf}
	if p.restartsOf != w.spec.SpecHash {
		// A new spec starts afresh: a revision never inherits the crash
		// loop of the one before.
		p.restarts, p.restartsOf = restart.Tracker{}, w.spec.SpecHash
	}
	var cur *container.State
	var stale []container.State
	for i := range cs {
		c := &cs[i]
		// The hash alone decides: the server may pin the image to a
		// digest later without changing what the container runs.
		if cur == nil && c.Labels[container.LabelSpecHash] == w.spec.SpecHash {
			cur = c
		} else {
			stale = append(stale, *c)
		}
	}
	// Stop-first removes what differs from the spec before anything else;
	// start-first keeps it serving until its replacement is ready.
	if !w.spec.StartFirst || replacementReady(k.status, cur, w) {
		p.remove = stale
	}
	switch {
	case cur == nil:
		if p.wait = p.restarts.Wait(now); p.wait > 0 {
			return p
		}
		p.stopWatch, p.act = true, actCreate
		// The container of this spec that the agent created is gone:
		// someone removed it.
		if k.status.containerID != "" && k.status.hash == w.spec.SpecHash {
			p.event = eventRecreated
		}
	case !cur.Running:
		p.stopWatch = true
		if !exitedStatus(&p, k.status, w, cur) {
			return p
		}
		if p.wait = p.restarts.Wait(now); p.wait > 0 {
			return p
		}
		p.act, p.target = actRestart, cur
	default:
		p.running = true
		if w.container.HealthCheck == nil {
			// Without a health check, running is as good as it gets.
			if k.status.state != api.InstanceRunning {
				p.status = &statusChange{state: api.InstanceRunning, containerID: cur.ID}
			}
			return p
		}
		if k.watched == cur.ID {
			return p
		}
		p.stopWatch, p.act, p.target = true, actWatch, cur
		if k.status.state != api.InstanceHealthy && k.status.state != api.InstanceUnhealthy {
			p.status = &statusChange{state: api.InstanceRunning, containerID: cur.ID}
		}
	}
	return p
}

// exitedStatus applies the restart policy to a container that stopped,
// sets p's status and reports whether the container is to be started
// again. An exit the policy restarts is no failure of the instance until it
// crash-loops (restart.Tolerance).
func exitedStatus(p *plan, st observed, w wanted, c *container.State) bool {
	if c.StartedAt.IsZero() {
		// Created but never started: the start that failed said why, and
		// a failed start is the instance's failure.
		if st.state != api.InstanceFailed || st.containerID != c.ID {
			p.status = &statusChange{api.InstanceFailed, cmp.Or(c.Error, "created but never started"), c.ID}
		}
		return true
	}
	reason := fmt.Sprintf("exited with code %d", c.ExitCode)
	if c.Error != "" {
		reason += ": " + c.Error
	}
	d := p.restarts.Exited(w.container.RestartPolicy, c.ExitCode, c.FinishedAt.Sub(c.StartedAt))
	switch {
	case !d.Restart:
		state := api.InstanceStopped
		if c.ExitCode != 0 {
			state = api.InstanceFailed
		}
		p.status = &statusChange{state, reason, c.ID}
		return false
	case d.CrashLoop:
		p.status = &statusChange{api.InstanceFailed, fmt.Sprintf("%s; crash-looping: restarted %d times in a row, restarting with backoff up to %s",
			reason, p.restarts.Streak(), restart.MaxDelay), c.ID}
	default:
		p.status = &statusChange{api.InstanceStarting, reason + "; restarting", c.ID}
	}
	return true
}

// replacementReady reports whether an instance's current container may take
// over from the ones it replaces: running, and healthy if it is checked.
func replacementReady(st observed, cur *container.State, w wanted) bool {
	if cur == nil || !cur.Running {
		return false
	}
	if w.container.HealthCheck == nil {
		return true
	}
	return st.state == api.InstanceHealthy && st.containerID == cur.ID
}
