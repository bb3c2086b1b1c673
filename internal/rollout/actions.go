package rollout

import (
	"fmt"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

// RefusedError is a user's action that the rollout's state does not allow:
// pausing a rollout that is not running, resuming one that is not paused or
// whose canary waits for promotion, promoting one with no canary waiting,
// aborting one that ended. Its message says why, and what to do instead
// when there is something.
type RefusedError struct {
	// Action is what was refused: pause, resume, promote or abort.
	Action string
	msg    string
}

func (e *RefusedError) Error() string { return e.msg }

func refuse(action, format string, a ...any) *RefusedError {
	return &RefusedError{Action: action, msg: fmt.Sprintf(format, a...)}
}

// acted is the Result of an action that changed r at now and recorded
// one event.
func acted(r api.Rollout, now time.Time, typ, msg string) Result {
	r.UpdatedAt = now
	return Result{Rollout: r, Events: []Event{{Type: typ, Message: msg}}, Changed: true}
}

// Pause holds a running rollout: Step starts no batch until Resume. The
// instances already sent to the new revision carry on.
func Pause(r api.Rollout, now time.Time) (Result, error) {
	if r.State != api.RolloutRunning {
		return Result{}, refuse("pause", "rollout %s is %s, not running: nothing to pause", r.ID, r.State)
	}
	r.State, r.Message = api.RolloutPaused, "paused by a user; `dockfleet rollout resume` continues"
	return acted(r, now, "rollout.paused", fmt.Sprintf("rollout to revision %d paused", r.To)), nil
}

// Resume continues a rollout a user paused. A canary waiting for promotion
// is paused too, but only Promote continues it: resuming it would skip the
// decision the canary waits for.
func Resume(r api.Rollout, now time.Time) (Result, error) {
	switch {
	case r.State != api.RolloutPaused:
		return Result{}, refuse("resume", "rollout %s is %s, not paused: nothing to resume", r.ID, r.State)
	case r.Phase == api.PhaseAwaitingPromotion:
		return Result{}, refuse("resume", "rollout %s waits for its canary to be promoted: use `dockfleet rollout promote`", r.ID)
	}
	r.State, r.Message = api.RolloutRunning, ""
	r.LastProgress = now // time spent paused is not lack of progress
	return acted(r, now, "rollout.resumed", fmt.Sprintf("rollout to revision %d resumed", r.To)), nil
}

// Promote continues a rollout whose healthy canary waits for promotion
// with the remaining batches.
func Promote(r api.Rollout, now time.Time) (Result, error) {
	if r.State != api.RolloutPaused || r.Phase != api.PhaseAwaitingPromotion {
		return Result{}, refuse("promote", "rollout %s has no canary awaiting promotion (state %s, phase %s)", r.ID, r.State, r.Phase)
	}
	r.State, r.Phase, r.Promoted, r.Message = api.RolloutRunning, api.PhaseBatches, true, ""
	r.LastProgress = now // time spent waiting for a user is not lack of progress
	return acted(r, now, "rollout.promoted", "canary promoted; continuing with the remaining batches"), nil
}

// Abort stops a rollout that has not ended, running or paused, and returns
// the instances it moved to the revision they came from.
func Abort(r api.Rollout, insts []Instance, now time.Time) (Result, error) {
	if r.State.Final() {
		return Result{}, refuse("abort", "rollout %s already ended (%s): nothing to abort", r.ID, r.State)
	}
	s := &stepper{r: r, now: now, insts: insts}
	n := s.moveBack()
	s.r.State, s.r.Phase, s.r.BatchInstances = api.RolloutAborted, api.PhaseDone, nil
	s.r.Message = fmt.Sprintf("aborted; returned %d instances to revision %d", n, r.From)
	s.event("rollout.aborted", "rollout to revision %d %s", r.To, s.r.Message)
	s.res.Rollout, s.res.Changed = s.r, true
	s.res.Rollout.UpdatedAt = now
	return s.res, nil
}
