// Package restart is the agent's restart policy for an instance whose
// container exited: whether to restart it, how long to wait first, and when
// an instance that keeps exiting is crash-looping. Crash-looping is the one
// verdict of the agent's that fails the instance's revision in a rollout;
// a container that exits now and then is restarted and fails nothing. The
// package is pure: the agent passes in the time, so tests move it.
package restart

import (
	"time"

	"github.com/dockfleet/dockfleet/internal/spec"
)

// The backoff: the first attempt is immediate, each later one waits twice
// as long as the one before (FirstDelay, 2×, 4×…) up to MaxDelay. A
// container that stayed up for ResetAfter starts the count again.
const (
	FirstDelay = time.Second
	MaxDelay   = time.Minute
	ResetAfter = 5 * time.Minute
	// Tolerance is how many attempts in a row an instance gets before it is
	// crash-looping: three restarts ride out a dependency that comes up a
	// few seconds late, without hiding a revision that cannot run.
	Tolerance = 3
)

// Tracker is one instance's restart history. The zero value has none.
type Tracker struct {
	streak int // attempts since the container last stayed up for ResetAfter
	total  int // restarts ever, shown to users
	next   time.Time
}

// Decision is what to do with an exited container.
type Decision struct {
	// Restart is true when the policy restarts the container.
	Restart bool
	// CrashLoop is true when the instance used up its Tolerance: it is
	// still restarted, with backoff, but it has failed.
	CrashLoop bool
}

// Exited decides for a container that exited with exitCode after running
// for ranFor (zero if it never started), under policy (empty means always).
func (t *Tracker) Exited(policy spec.RestartPolicy, exitCode int, ranFor time.Duration) Decision {
	if ranFor >= ResetAfter {
		t.streak, t.next = 0, time.Time{}
	}
	var restart bool
	switch policy {
	case spec.RestartNever:
	case spec.RestartOnFailure:
		restart = exitCode != 0
	default:
		restart = true
	}
	return Decision{Restart: restart, CrashLoop: restart && t.streak >= Tolerance}
}

// Wait is how long the next attempt must wait after now: zero when it may come now.
func (t *Tracker) Wait(now time.Time) time.Duration {
	return max(t.next.Sub(now), 0)
}

// Restarted records a restart at now.
func (t *Tracker) Restarted(now time.Time) {
	t.total++
	t.attempted(now)
}

// Failed records an attempt at now that failed to start the instance (a
// pull, create or start that went wrong): the next waits as a restart would.
func (t *Tracker) Failed(now time.Time) {
	t.attempted(now)
}

func (t *Tracker) attempted(now time.Time) {
	delay := FirstDelay << min(t.streak, 6)
	t.streak++
	t.next = now.Add(min(delay, MaxDelay))
}

// Restarts is how many times the instance's container was restarted.
func (t *Tracker) Restarts() int { return t.total }

// Streak is how many attempts came since the container last stayed up for
// ResetAfter.
func (t *Tracker) Streak() int { return t.streak }
