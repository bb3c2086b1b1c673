// Package rollout decides each step of a rollout: which instances move to
// the new revision now, whether the batch in flight is healthy, when the
// rollout has succeeded, failed or must roll back. It is pure: the server's
// controller gathers the instances, calls Step, and persists the Result in
// one transaction. Because Step reads the instances as they are (an
// instance already at the target revision is never moved again), a server
// killed between steps resumes where it was, updating nothing twice. A
// user's pause, resume, promote and abort are pure too (Pause, Resume,
// Promote, Abort): each takes the rollout as stored and returns a Result
// persisted the same way, or a *RefusedError when the rollout's state does
// not allow it; the next Step goes on from where the action left it.
package rollout

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// Instance is what a step needs to know of one instance of the deployment.
type Instance struct {
	ID       string
	NodeID   string
	NodeName string
	Revision int64
	State    api.InstanceState
	Reason   string
	// Since is when the instance entered State.
	Since time.Time
	// Reachable is false while the instance's node is unreachable: what it
	// last reported may be stale, and it cannot be updated now.
	Reachable bool
	// Checked is true when the instance's revision has a health check;
	// without one, running is as healthy as it gets.
	Checked bool
	// Pulled and PullError report the node's pre-pull of the new image,
	// when it answered since the last step.
	Pulled    bool
	PullError string
}

// up reports whether the instance serves: healthy, or running unchecked.
func (i Instance) up() bool {
	return i.State == api.InstanceHealthy || (!i.Checked && i.State == api.InstanceRunning)
}

// Move sends an instance to a revision.
type Move struct {
	ID       string
	Revision int64
}

// Event is a step's record of what it did.
type Event struct {
	Type    string
	Message string
}

// Result is one step's decision.
type Result struct {
	Rollout api.Rollout
	Moves   []Move
	Events  []Event
	// Stable, when set, is the deployment's new stable revision.
	Stable *int64
	// Wake is when the rollout needs another step even if nothing changes
	// (a minimum healthy time or a deadline runs out); zero if never.
	Wake time.Time
	// Changed is false when the step changed nothing worth persisting.
	Changed bool
}

type stepper struct {
	r     api.Rollout
	u     spec.Update
	now   time.Time
	insts []Instance
	res   Result
	// Sets of the rollout's ID lists: a step over 10,000 instances must not
	// search a 10,000-entry list for each of them.
	batch, seenFailed, prePulled, pullFailed map[string]bool
}

func toSet(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func (s *stepper) event(typ, format string, a ...any) {
	s.res.Events = append(s.res.Events, Event{Type: typ, Message: fmt.Sprintf(format, a...)})
}

func (s *stepper) wakeAt(t time.Time) {
	if !t.After(s.now) {
		return
	}
	if s.res.Wake.IsZero() || t.Before(s.res.Wake) {
		s.res.Wake = t
	}
}

// healthyEnough reports whether i has been up for MinHealthyTime, and if
// not yet, asks for a step when it will have been.
func (s *stepper) healthyEnough(i Instance) bool {
	if !i.up() {
		return false
	}
	at := i.Since.Add(time.Duration(s.u.MinHealthyTime))
	if s.now.Before(at) {
		s.wakeAt(at)
		return false
	}
	return true
}

// failed reports whether an instance moved by this rollout has failed,
// and asks for a step when it may fail next.
func (s *stepper) failed(i Instance) bool {
	if i.Revision != s.r.To {
		return false
	}
	var deadline time.Time
	if s.batch[i.ID] {
		deadline = s.r.BatchStarted.Add(time.Duration(s.u.HealthyDeadline))
	}
	failed, recheck := Failed(i, deadline, s.now)
	s.wakeAt(recheck)
	return failed
}

// Failed is the rule for what fails an instance during a rollout; i is on
// the rollout's new revision. It has failed when:
//   - its agent reports it failed: the revision cannot start (the pull,
//     the create or the start of its container failed, or its spec is
//     unreadable), or it crash-loops beyond the restart policy's
//     tolerance (restart.Tolerance restarts in a row). An exit the agent
//     restarts, or a container removed from outside dockfleet and
//     recreated, is reported starting, not failed: it fails nothing;
//   - its health check failed its retries (unhealthy);
//   - it is in the batch in flight and not up (healthy, or running when
//     unchecked) by deadline, the batch's start plus healthyDeadline; a
//     zero deadline is none.
//
// An instance on an unreachable node has not failed: what it last reported
// may be stale, and the rollout waits for it. recheck, when not zero, is
// when the instance fails unless it changes first.
func Failed(i Instance, deadline, now time.Time) (failed bool, recheck time.Time) {
	switch {
	case !i.Reachable:
		return false, time.Time{}
	case i.State == api.InstanceFailed || i.State == api.InstanceUnhealthy:
		return true, time.Time{}
	case deadline.IsZero() || i.up():
		return false, time.Time{}
	case !now.Before(deadline):
		return true, time.Time{}
	}
	return false, deadline
}

// Step decides what rollout r does next, given the deployment's instances
// and its update strategy u.
func Step(r api.Rollout, u spec.Update, insts []Instance, now time.Time) Result {
	s := &stepper{r: r, u: u, now: now, insts: insts, batch: toSet(r.BatchInstances), seenFailed: toSet(r.FailedInstances),
		prePulled: toSet(r.PrePulled), pullFailed: toSet(r.PullFailed)}
	s.step()
	s.res.Rollout = s.r
	if s.res.Changed || len(s.res.Moves) > 0 || len(s.res.Events) > 0 {
		s.res.Changed = true
		s.res.Rollout.UpdatedAt = now
	}
	return s.res
}

func (s *stepper) setMessage(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if msg != s.r.Message {
		s.r.Message = msg
		s.res.Changed = true
	}
}

func (s *stepper) count() {
	total, updated, healthy, failed := len(s.insts), 0, 0, 0
	for _, i := range s.insts {
		if i.Revision != s.r.To {
			continue
		}
		updated++
		if i.up() {
			healthy++
		}
		if s.failed(i) {
			failed++
		}
	}
	failed += len(s.r.PullFailed)
	if total != s.r.Total || updated != s.r.Updated || healthy != s.r.Healthy || failed != s.r.Failed {
		s.r.Total, s.r.Updated, s.r.Healthy, s.r.Failed = total, updated, healthy, failed
		s.res.Changed = true
	}
}

func (s *stepper) step() {
	if s.r.State.Final() {
		return
	}
	s.count()
	if s.r.State == api.RolloutPaused {
		return
	}
	if s.r.Phase == "" {
		s.r.Phase = s.firstPhase()
		if s.u.PrePull {
			s.r.Phase = api.PhasePrePull
			s.event("prepull.started", "pulling the image of revision %d on every target before the first batch", s.r.To)
		}
		s.r.LastProgress = s.now
		s.res.Changed = true
	}
	if s.r.Phase == api.PhasePrePull {
		s.prePull()
	}
	if s.checkFailures() || s.r.Phase == api.PhasePrePull {
		return
	}
	if len(s.r.BatchInstances) > 0 && !s.batchDone() {
		return
	}
	s.nextBatch()
}

// checkFailures ends the rollout when more instances failed than the
// strategy allows, or when it made no progress for ProgressDeadline.
func (s *stepper) checkFailures() bool {
	var failed []Instance
	for _, i := range s.insts {
		if s.failed(i) {
			failed = append(failed, i)
			if !s.seenFailed[i.ID] {
				s.seenFailed[i.ID] = true
				s.r.FailedInstances = append(s.r.FailedInstances, i.ID)
				s.event("instance.failed", "instance %s on %s failed: %s", i.ID, i.NodeName, s.why(i))
			}
		}
	}
	allowed := int(s.u.MaxFailureRatio * float64(len(s.insts)))
	if n := len(failed) + len(s.r.PullFailed); n > allowed {
		first := "pulling the image failed"
		for _, i := range s.insts {
			if i.PullError != "" {
				first = fmt.Sprintf("%s on %s: pulling the image: %s", i.ID, i.NodeName, i.PullError)
			}
		}
		if len(failed) > 0 {
			first = fmt.Sprintf("%s on %s: %s", failed[0].ID, failed[0].NodeName, s.why(failed[0]))
		}
		s.end(fmt.Sprintf("%d of %d instances failed (maxFailureRatio %g allows %d); first: %s",
			n, len(s.insts), s.u.MaxFailureRatio, allowed, first))
		return true
	}
	deadline := s.r.LastProgress.Add(time.Duration(s.u.ProgressDeadline))
	if !s.now.Before(deadline) {
		s.end(fmt.Sprintf("no progress for %s: %s", time.Duration(s.u.ProgressDeadline), s.r.Message))
		return true
	}
	s.wakeAt(deadline)
	return false
}

// why says why a failed instance failed.
func (s *stepper) why(i Instance) string {
	switch {
	case i.State != api.InstanceFailed && i.State != api.InstanceUnhealthy:
		return fmt.Sprintf("%s, not healthy within healthyDeadline %s", i.State, time.Duration(s.u.HealthyDeadline))
	case i.Reason != "":
		return i.Reason
	}
	return string(i.State)
}

// end fails the rollout: with autoRollback every instance it moved returns
// to the revision it came from. A first rollout (from revision 0) has no
// earlier good revision: rolling back would remove every container it
// started, the healthy ones too, so it stops and leaves the choice to the
// user (undo, a fixed apply, or delete).
func (s *stepper) end(why string) {
	s.r.Phase, s.r.BatchInstances = api.PhaseDone, nil
	clear(s.batch)
	if s.r.From == 0 {
		s.r.State = api.RolloutFailed
		s.r.Message = why + "; no earlier revision to roll back to, so the instances keep running as they are: " +
			"apply a fixed spec, or `dockfleet delete` the deployment"
		s.event("rollout.failed", "rollout to revision %d failed: %s", s.r.To, s.r.Message)
		return
	}
	if !s.u.AutoRollback {
		s.r.State, s.r.Message = api.RolloutFailed, why
		s.event("rollout.failed", "rollout to revision %d failed: %s", s.r.To, why)
		return
	}
	n := s.moveBack()
	s.r.State = api.RolloutRolledBack
	s.r.Message = fmt.Sprintf("%s; rolled %d instances back to revision %d", why, n, s.r.From)
	s.event("rollout.rolled_back", "rollout to revision %d failed: %s", s.r.To, s.r.Message)
}

func (s *stepper) moveBack() int {
	n := 0
	for _, i := range s.insts {
		if i.Revision == s.r.To {
			s.res.Moves = append(s.res.Moves, Move{ID: i.ID, Revision: s.r.From})
			n++
		}
	}
	return n
}

func (s *stepper) firstPhase() string {
	if s.u.Canary.Value > 0 {
		return api.PhaseCanary
	}
	return api.PhaseBatches
}

// prePull records the nodes that pulled the new image; when every
// reachable target has it (or failed to get it), the batches begin.
func (s *stepper) prePull() {
	var waiting []string
	for _, i := range s.insts {
		if i.Revision == s.r.To || s.prePulled[i.NodeID] || s.pullFailed[i.ID] {
			continue
		}
		switch {
		case i.PullError != "":
			s.r.PullFailed = append(s.r.PullFailed, i.ID)
			s.pullFailed[i.ID] = true
			s.event("instance.failed", "instance %s on %s failed: pulling the image: %s", i.ID, i.NodeName, i.PullError)
		case i.Pulled:
			s.r.PrePulled = append(s.r.PrePulled, i.NodeID)
			s.prePulled[i.NodeID] = true
			s.r.LastProgress = s.now
			s.event("image.pulled", "node %s has the image of revision %d", i.NodeName, s.r.To)
		default:
			waiting = append(waiting, i.NodeName)
		}
	}
	if len(waiting) > 0 {
		s.setMessage("pre-pull: %d nodes have the image, waiting for %d (%s)", len(s.r.PrePulled), len(waiting), names(waiting))
		return
	}
	s.r.Phase, s.r.LastProgress = s.firstPhase(), s.now
	s.event("prepull.done", "%d nodes have the image; %d could not pull it", len(s.r.PrePulled), len(s.r.PullFailed))
}

// batchDone reports whether the batch in flight is healthy for long enough,
// and records it if so; otherwise it says what the batch waits for.
func (s *stepper) batchDone() bool {
	var waiting, unreachable []string
	for _, i := range s.insts {
		if !s.batch[i.ID] || i.Revision != s.r.To || s.failed(i) {
			continue // gone, moved back by hand, or failed within what maxFailureRatio allows
		}
		if !i.Reachable {
			unreachable = append(unreachable, i.NodeName)
		} else if !s.healthyEnough(i) {
			waiting = append(waiting, i.NodeName)
		}
	}
	switch {
	case len(unreachable) > 0:
		s.setMessage("batch %d of %d: waiting for %d instances on unreachable nodes (%s)", s.r.Batch, s.r.Batches, len(unreachable), names(unreachable))
		return false
	case len(waiting) > 0:
		s.setMessage("batch %d of %d: waiting for %d instances to be healthy for %s (%s)", s.r.Batch, s.r.Batches, len(waiting),
			time.Duration(s.u.MinHealthyTime), names(waiting))
		return false
	}
	s.event("batch.healthy", "batch %d of %d healthy: %d instances", s.r.Batch, s.r.Batches, len(s.r.BatchInstances))
	s.r.BatchInstances, s.r.LastProgress = nil, s.now
	clear(s.batch)
	s.r.NextBatchAt = s.now.Add(time.Duration(s.u.BatchDelay))
	s.res.Changed = true
	if s.r.Phase == api.PhaseCanary {
		if s.u.AutoPromote {
			s.r.Phase, s.r.Promoted = api.PhaseBatches, true
			s.event("rollout.promoted", "canary healthy; promoted automatically")
		} else {
			s.r.State, s.r.Phase = api.RolloutPaused, api.PhaseAwaitingPromotion
			s.r.Message = fmt.Sprintf("canary healthy; run `dockfleet rollout promote %s` to continue or `dockfleet rollout abort %[1]s`", s.r.Deployment)
			s.event("canary.healthy", "%s", s.r.Message)
			return false
		}
	}
	return true
}

func names(ns []string) string {
	slices.Sort(ns)
	if len(ns) > 5 {
		return strings.Join(ns[:5], ", ") + fmt.Sprintf(" and %d more", len(ns)-5)
	}
	return strings.Join(ns, ", ")
}

// spread orders the instances left to update so that a batch takes one
// instance from each node before a second from any: the nodes' agents then
// work in parallel, and a batch weakens no node more than it must.
// Reachable nodes come first; names and IDs make the order predictable.
func spread(insts []Instance) {
	slices.SortFunc(insts, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.NodeName, b.NodeName), cmp.Compare(a.ID, b.ID))
	})
	rank := make(map[string]int, len(insts))
	nth := map[string]int{}
	for _, i := range insts {
		rank[i.ID] = nth[i.NodeName]
		nth[i.NodeName]++
	}
	slices.SortStableFunc(insts, func(a, b Instance) int {
		if a.Reachable != b.Reachable {
			if a.Reachable {
				return -1
			}
			return 1
		}
		return cmp.Compare(rank[a.ID], rank[b.ID])
	})
}

// nextBatch starts the next batch, or ends the rollout when no instance is
// left to move.
func (s *stepper) nextBatch() {
	var remaining []Instance
	unavailable := 0
	for _, i := range s.insts {
		if i.Revision != s.r.To && !s.pullFailed[i.ID] {
			remaining = append(remaining, i)
		}
		// An instance with nothing to run yet (revision 0, the first
		// rollout of a deployment) serves no one, so moving it costs nothing.
		if i.Revision != 0 && !i.up() {
			unavailable++
		}
	}
	if len(remaining) == 0 {
		s.r.State, s.r.Phase, s.r.Message = api.RolloutSucceeded, api.PhaseDone, ""
		to := s.r.To
		s.res.Stable = &to
		s.event("rollout.succeeded", "all %d instances on revision %d", len(s.insts), s.r.To)
		return
	}
	// batchDelay holds back the next batch, not the end of the rollout:
	// after the last batch there is nothing to wait for.
	if s.now.Before(s.r.NextBatchAt) {
		s.setMessage("waiting %s (batchDelay) before batch %d", s.r.NextBatchAt.Sub(s.now).Round(time.Second), s.r.Batch+1)
		s.wakeAt(s.r.NextBatchAt)
		return
	}
	spread(remaining)
	total := len(s.insts)
	size := s.u.BatchSize.Of(total)
	if s.r.Phase == api.PhaseCanary {
		size = s.u.Canary.Of(total)
	}
	budget := s.u.MaxUnavailable.Of(total) - unavailable
	var batch []Instance
	var unreachable []string
	for _, i := range remaining {
		if len(batch) == size {
			break
		}
		if !i.Reachable {
			unreachable = append(unreachable, i.NodeName)
			continue
		}
		if i.Revision != 0 && i.up() {
			if budget <= 0 {
				continue
			}
			budget--
		}
		batch = append(batch, i)
	}
	if len(batch) == 0 {
		if len(unreachable) > 0 {
			s.setMessage("waiting for %d instances on unreachable nodes (%s)", len(unreachable), names(unreachable))
		} else {
			s.setMessage("waiting: %d instances unavailable, maxUnavailable is %s", unavailable, s.u.MaxUnavailable)
		}
		return
	}
	after := len(remaining) - len(batch)
	s.r.Batch++
	s.r.Batches = s.r.Batch + (after+s.u.BatchSize.Of(total)-1)/s.u.BatchSize.Of(total)
	s.r.BatchInstances, s.r.BatchStarted, s.r.LastProgress = nil, s.now, s.now
	clear(s.batch)
	var nodes []string
	for _, i := range batch {
		s.r.BatchInstances = append(s.r.BatchInstances, i.ID)
		s.batch[i.ID] = true
		s.res.Moves = append(s.res.Moves, Move{ID: i.ID, Revision: s.r.To})
		nodes = append(nodes, i.NodeName)
	}
	kind := "batch"
	if s.r.Phase == api.PhaseCanary {
		kind = "canary batch"
	}
	s.setMessage("batch %d of %d: updating %d instances (%s)", s.r.Batch, s.r.Batches, len(batch), names(nodes))
	s.event("batch.started", "%s %d of %d: updating %d instances to revision %d (%s)", kind, s.r.Batch, s.r.Batches, len(batch), s.r.To, names(nodes))
	s.wakeAt(s.now.Add(time.Duration(s.u.HealthyDeadline)))
}
