package rollout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func update(batch, unavailable, canary spec.IntOrPercent) spec.Update {
	return spec.Update{BatchSize: batch, MaxUnavailable: unavailable, Canary: canary,
		MinHealthyTime: spec.Duration(10 * time.Second), HealthyDeadline: spec.Duration(time.Minute),
		ProgressDeadline: spec.Duration(10 * time.Minute), AutoRollback: true, Order: spec.OrderStopFirst}
}

func n(v int) spec.IntOrPercent   { return spec.IntOrPercent{Value: v} }
func pct(v int) spec.IntOrPercent { return spec.IntOrPercent{Value: v, Percent: true} }

// world simulates a deployment's instances: a moved instance becomes
// healthy after startup, unless its revision is bad. Its clock, now, is the
// next instant to simulate: it starts at t0 and only moves forward, so a
// run that follows another (after a promotion, a restart) continues in time.
type world struct {
	now     time.Time
	insts   []Instance
	startup time.Duration
	bad     map[int64]bool
	moved   map[string]int // how often each instance was moved forward
	changed map[string]time.Time
}

func newWorld(nodes int, rev int64) *world {
	w := &world{now: t0, startup: 3 * time.Second, bad: map[int64]bool{}, moved: map[string]int{}, changed: map[string]time.Time{}}
	for i := range nodes {
		state := api.InstanceHealthy
		if rev == 0 {
			state = api.InstancePending
		}
		w.insts = append(w.insts, Instance{ID: fmt.Sprintf("i%02d", i), NodeName: fmt.Sprintf("n%02d", i), Revision: rev,
			State: state, Since: t0.Add(-time.Hour), Reachable: true, Checked: true})
	}
	return w
}

func (w *world) apply(res Result, to int64, now time.Time) {
	for _, m := range res.Moves {
		for k := range w.insts {
			if w.insts[k].ID == m.ID {
				if m.Revision == to {
					w.moved[m.ID]++
				}
				w.insts[k].Revision, w.insts[k].State, w.insts[k].Since = m.Revision, api.InstancePending, now
				w.changed[m.ID] = now
			}
		}
	}
}

// tick advances instances that were moved: pending → healthy (or unhealthy
// for a bad revision) after startup.
func (w *world) tick(now time.Time) {
	for k, i := range w.insts {
		if i.State == api.InstancePending && i.Revision != 0 && now.Sub(i.Since) >= w.startup {
			w.insts[k].State, w.insts[k].Since = api.InstanceHealthy, now
			if w.bad[i.Revision] {
				w.insts[k].State, w.insts[k].Reason = api.InstanceUnhealthy, "http://x:8080/healthz: status 500"
			}
		}
	}
}

func (w *world) unavailable() int {
	n := 0
	for _, i := range w.insts {
		if i.Revision != 0 && !i.up() {
			n++
		}
	}
	return n
}

// run steps r every second of the world's time until it is final or
// paused, or limit passes.
func run(t *testing.T, w *world, r api.Rollout, u spec.Update, limit time.Duration, check func(now time.Time, res Result)) (api.Rollout, []Event) {
	t.Helper()
	var events []Event
	for end := w.now.Add(limit); w.now.Before(end); {
		now := w.now
		w.now = now.Add(time.Second)
		if now.Before(r.UpdatedAt) || now.Before(r.LastProgress) {
			t.Fatalf("simulated time %v is before the rollout's last update %v or progress %v: the clock went backwards",
				now.Sub(t0), r.UpdatedAt.Sub(t0), r.LastProgress.Sub(t0))
		}
		w.tick(now)
		res := Step(r, u, w.insts, now)
		r = res.Rollout
		events = append(events, res.Events...)
		w.apply(res, r.To, now)
		if check != nil {
			check(now, res)
		}
		if r.State.Final() || r.State == api.RolloutPaused {
			return r, events
		}
	}
	return r, events
}

func newRollout(from, to int64) api.Rollout {
	return api.Rollout{ID: "r", Deployment: "web", From: from, To: to, State: api.RolloutRunning, CreatedAt: t0}
}

func TestRolloutBatches(t *testing.T) {
	tests := []struct {
		name                 string
		nodes                int
		from                 int64
		u                    spec.Update
		wantBatches          int
		wantMaxUnavailableLE int
	}{
		{"6 nodes in batches of 2", 6, 1, update(n(2), n(2), n(0)), 3, 2},
		{"10 nodes in 10% batches", 10, 1, update(pct(10), pct(10), n(0)), 10, 1},
		{"7 nodes in 25% batches round up to 2", 7, 1, update(pct(25), pct(25), n(0)), 4, 2},
		{"maxUnavailable 1 limits batches of 3", 6, 1, update(n(3), n(1), n(0)), 6, 1},
		{"first deployment goes in batches too", 6, 0, update(n(2), n(2), n(0)), 3, 6},
		{"canary then batches", 6, 1, update(n(2), n(2), n(1)), 4, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(tc.nodes, tc.from)
			u := tc.u
			u.AutoPromote = true
			batchStarted := map[int]time.Time{}
			r, events := run(t, w, newRollout(tc.from, tc.from+1), u, time.Hour, func(now time.Time, res Result) {
				if got := w.unavailable(); tc.from != 0 && got > tc.wantMaxUnavailableLE {
					t.Fatalf("%v: %d instances unavailable; want at most %d", now.Sub(t0), got, tc.wantMaxUnavailableLE)
				}
				for _, e := range res.Events {
					if e.Type == "batch.started" {
						batchStarted[res.Rollout.Batch] = now
					}
					if e.Type == "batch.healthy" {
						if took := now.Sub(batchStarted[res.Rollout.Batch]); took < w.startup+10*time.Second {
							t.Errorf("batch %d healthy after %v; want at least startup plus minHealthyTime", res.Rollout.Batch, took)
						}
					}
				}
			})
			if r.State != api.RolloutSucceeded || r.Batch != tc.wantBatches {
				t.Fatalf("rollout = %s after batch %d (%s); want succeeded after %d batches", r.State, r.Batch, r.Message, tc.wantBatches)
			}
			for id, k := range w.moved {
				if k != 1 {
					t.Errorf("instance %s moved %d times; want once", id, k)
				}
			}
			if len(w.moved) != tc.nodes {
				t.Errorf("%d instances moved; want %d", len(w.moved), tc.nodes)
			}
			if last := events[len(events)-1]; last.Type != "rollout.succeeded" {
				t.Errorf("last event %+v; want rollout.succeeded", last)
			}
		})
	}
}

func TestRolloutSucceedsSetsStable(t *testing.T) {
	w := newWorld(2, 1)
	var stable *int64
	run(t, w, newRollout(1, 2), update(n(1), n(1), n(0)), time.Hour, func(_ time.Time, res Result) {
		if res.Stable != nil {
			stable = res.Stable
		}
	})
	if stable == nil || *stable != 2 {
		t.Errorf("stable = %v; want 2", stable)
	}
}

func TestBadRevisionRollsBackTheCanary(t *testing.T) {
	w := newWorld(6, 2)
	w.bad[3] = true
	u := update(n(2), n(2), n(1))
	u.AutoPromote = true
	r, events := run(t, w, newRollout(2, 3), u, time.Hour, nil)
	if r.State != api.RolloutRolledBack {
		t.Fatalf("state %s (%s); want rolled_back", r.State, r.Message)
	}
	if !strings.Contains(r.Message, "1 of 6 instances failed") || !strings.Contains(r.Message, "status 500") {
		t.Errorf("message %q; want the failure count and reason", r.Message)
	}
	for _, i := range w.insts {
		if i.Revision != 2 {
			t.Errorf("instance %s on revision %d after rollback; want 2", i.ID, i.Revision)
		}
	}
	if len(w.moved) != 1 {
		t.Errorf("%d instances touched; want only the canary", len(w.moved))
	}
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, " "); got != "batch.started instance.failed rollout.rolled_back" {
		t.Errorf("events %q", got)
	}
}

func TestWithoutAutoRollbackTheRolloutFailsInPlace(t *testing.T) {
	w := newWorld(4, 1)
	w.bad[2] = true
	u := update(n(2), n(2), n(0))
	u.AutoRollback = false
	r, _ := run(t, w, newRollout(1, 2), u, time.Hour, nil)
	if r.State != api.RolloutFailed {
		t.Fatalf("state %s; want failed", r.State)
	}
	if len(w.moved) != 2 {
		t.Errorf("%d instances moved; want the first batch of 2, left where they are", len(w.moved))
	}
}

func TestMaxFailureRatioToleratesFailures(t *testing.T) {
	w := newWorld(10, 1)
	u := update(n(2), n(2), n(0))
	u.MaxFailureRatio = 0.2
	// One node's instance fails whatever it runs.
	w.insts[0].NodeName = "a-flaky"
	r, _ := run(t, w, newRollout(1, 2), u, time.Hour, func(now time.Time, res Result) {
		for k, i := range w.insts {
			if i.NodeName == "a-flaky" && i.Revision == 2 && i.State == api.InstanceHealthy {
				w.insts[k].State = api.InstanceFailed
			}
		}
	})
	if r.State != api.RolloutSucceeded || r.Failed != 1 {
		t.Errorf("state %s with %d failed (%s); want succeeded with 1 failure tolerated", r.State, r.Failed, r.Message)
	}
}

func TestCanaryWaitsForPromotion(t *testing.T) {
	w := newWorld(4, 1)
	r, events := run(t, w, newRollout(1, 2), update(n(2), n(2), n(1)), time.Hour, nil)
	if r.State != api.RolloutPaused || r.Phase != api.PhaseAwaitingPromotion || !strings.Contains(r.Message, "rollout promote web") {
		t.Fatalf("rollout %s/%s %q; want paused awaiting promotion", r.State, r.Phase, r.Message)
	}
	if len(w.moved) != 1 || events[len(events)-1].Type != "canary.healthy" {
		t.Errorf("moved %d, last event %+v; want the canary only and canary.healthy", len(w.moved), events[len(events)-1])
	}
	res, err := Promote(r, w.now)
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	r, _ = run(t, w, res.Rollout, update(n(2), n(2), n(1)), time.Hour, func(now time.Time, res Result) {
		// batchDelay is 0: nothing may hold the batches back.
		if strings.Contains(res.Rollout.Message, "batchDelay") {
			t.Errorf("%v: message %q; want no wait between batches", now.Sub(t0), res.Rollout.Message)
		}
	})
	if r.State != api.RolloutSucceeded || len(w.moved) != 4 || !r.Promoted {
		t.Errorf("after promotion: %s with %d moved, promoted %v; want succeeded with 4, promoted", r.State, len(w.moved), r.Promoted)
	}
}

// TestBatchDelay: after a batch is healthy the next one waits batchDelay,
// saying so, and the controller is woken when the wait ends; the last batch
// is followed by success at once, as there is nothing left to wait for.
func TestBatchDelay(t *testing.T) {
	const delay = 30 * time.Second
	w := newWorld(6, 1)
	u := update(n(2), n(2), n(0))
	u.BatchDelay = spec.Duration(delay)
	var healthyAt, succeededAt time.Time // healthyAt is zero while a batch is in flight
	waits := 0
	r, _ := run(t, w, newRollout(1, 2), u, time.Hour, func(now time.Time, res Result) {
		for _, e := range res.Events {
			switch e.Type {
			case "batch.healthy":
				healthyAt = now
			case "batch.started":
				if res.Rollout.Batch > 1 && now.Sub(healthyAt) != delay {
					t.Errorf("batch %d started %v after the one before was healthy; want batchDelay %v", res.Rollout.Batch, now.Sub(healthyAt), delay)
				}
				healthyAt = time.Time{}
			case "rollout.succeeded":
				succeededAt = now
			}
		}
		if healthyAt.IsZero() || res.Rollout.State != api.RolloutRunning {
			return
		}
		waits++
		next := healthyAt.Add(delay)
		if want := fmt.Sprintf("waiting %s (batchDelay) before batch %d", next.Sub(now), res.Rollout.Batch+1); res.Rollout.Message != want {
			t.Errorf("%v: message %q; want %q", now.Sub(t0), res.Rollout.Message, want)
		}
		if !res.Wake.Equal(next) {
			t.Errorf("%v: wake at %v; want %v, when batchDelay ends", now.Sub(t0), res.Wake.Sub(t0), next.Sub(t0))
		}
	})
	if r.State != api.RolloutSucceeded || r.Batch != 3 {
		t.Fatalf("rollout %s after batch %d (%s); want succeeded after 3", r.State, r.Batch, r.Message)
	}
	if want := 2 * int(delay/time.Second); waits != want {
		t.Errorf("%d steps waited between batches; want %d, batchDelay twice", waits, want)
	}
	if !succeededAt.Equal(healthyAt) {
		t.Errorf("succeeded %v after the last batch was healthy; want at once", succeededAt.Sub(healthyAt))
	}
}

func TestPausedRolloutMovesNothing(t *testing.T) {
	w := newWorld(4, 1)
	r := newRollout(1, 2)
	r.State = api.RolloutPaused
	res := Step(r, update(n(2), n(2), n(0)), w.insts, t0)
	if len(res.Moves) != 0 || res.Rollout.State != api.RolloutPaused {
		t.Errorf("paused step moved %d and left state %s", len(res.Moves), res.Rollout.State)
	}
}

func TestUnreachableNodesWaitThenHitTheProgressDeadline(t *testing.T) {
	w := newWorld(3, 1)
	w.insts[2].Reachable = false
	u := update(n(1), n(1), n(0))
	u.ProgressDeadline = spec.Duration(2 * time.Minute)
	var waitMsg string
	r, _ := run(t, w, newRollout(1, 2), u, time.Hour, func(_ time.Time, res Result) {
		if strings.Contains(res.Rollout.Message, "unreachable") {
			waitMsg = res.Rollout.Message
		}
	})
	if !strings.Contains(waitMsg, "waiting for 1 instances on unreachable nodes (n02)") {
		t.Errorf("while waiting the rollout said %q; want it to name the unreachable node", waitMsg)
	}
	if r.State != api.RolloutRolledBack || !strings.Contains(r.Message, "no progress for 2m0s") || r.Failed != 0 {
		t.Errorf("rollout %s %q with %d failed; want rolled back for no progress, with no failures counted", r.State, r.Message, r.Failed)
	}
}

func TestUnreachableNodeThatReturnsIsUpdated(t *testing.T) {
	w := newWorld(3, 1)
	w.insts[2].Reachable = false
	u := update(n(1), n(1), n(0))
	r, _ := run(t, w, newRollout(1, 2), u, time.Hour, func(now time.Time, _ Result) {
		if now.Sub(t0) == 90*time.Second {
			w.insts[2].Reachable = true
		}
	})
	if r.State != api.RolloutSucceeded || len(w.moved) != 3 {
		t.Errorf("rollout %s (%s) with %d moved; want succeeded with all 3", r.State, r.Message, len(w.moved))
	}
}

func TestHealthyDeadline(t *testing.T) {
	w := newWorld(2, 1)
	w.startup = 2 * time.Minute // longer than the healthy deadline
	r, _ := run(t, w, newRollout(1, 2), update(n(1), n(1), n(0)), time.Hour, nil)
	if r.State != api.RolloutRolledBack || !strings.Contains(r.Message, "not healthy within healthyDeadline 1m0s") {
		t.Errorf("rollout %s %q; want rolled back for the healthy deadline", r.State, r.Message)
	}
}

func TestResumeAfterRestartMovesNothingTwice(t *testing.T) {
	// A step whose result was persisted, then a "restart": the next step
	// starts from the stored rollout and the instances as they are.
	w := newWorld(6, 1)
	u := update(n(2), n(2), n(0))
	r, _ := run(t, w, newRollout(1, 2), u, 20*time.Second, nil)
	if r.Batch != 2 {
		t.Fatalf("after 20s at batch %d; want 2 (test setup)", r.Batch)
	}
	stored := r // what the store holds
	r, _ = run(t, w, stored, u, time.Hour, nil)
	if r.State != api.RolloutSucceeded {
		t.Fatalf("resumed rollout %s", r.State)
	}
	for id, k := range w.moved {
		if k != 1 {
			t.Errorf("instance %s moved %d times", id, k)
		}
	}
}

// TestActions: what a user's pause, resume, promote and abort do to a
// rollout in each state, and which of them the state refuses.
func TestActions(t *testing.T) {
	now := t0.Add(time.Hour)
	at := func(state api.RolloutState, phase string) api.Rollout {
		r := newRollout(1, 2)
		r.State, r.Phase, r.LastProgress, r.Message = state, phase, t0, "before"
		return r
	}
	// Two of four instances are on the new revision: abort returns them.
	w := newWorld(4, 1)
	w.insts[0].Revision, w.insts[1].Revision = 2, 2
	actions := map[string]func(api.Rollout, time.Time) (Result, error){
		"pause":   Pause,
		"resume":  Resume,
		"promote": Promote,
		"abort":   func(r api.Rollout, now time.Time) (Result, error) { return Abort(r, w.insts, now) },
	}
	running, paused, awaiting := at(api.RolloutRunning, api.PhaseBatches), at(api.RolloutPaused, api.PhaseBatches),
		at(api.RolloutPaused, api.PhaseAwaitingPromotion)
	promoted := running
	promoted.Promoted = true
	type want struct {
		state    api.RolloutState
		phase    string
		message  string
		event    Event
		progress bool // LastProgress moves to now
		promoted bool
		moves    int
	}
	type actionCase struct {
		name    string
		action  string
		r       api.Rollout
		want    want
		refused string // the refusal's message; empty when the action is allowed
	}
	tests := []actionCase{
		{"pause a running rollout", "pause", running, want{state: api.RolloutPaused, phase: api.PhaseBatches,
			message: "paused by a user; `dockfleet rollout resume` continues", event: Event{"rollout.paused", "rollout to revision 2 paused"}}, ""},
		{"pause twice", "pause", paused, want{}, "rollout r is paused, not running: nothing to pause"},
		{"pause a canary awaiting promotion", "pause", awaiting, want{}, "rollout r is paused, not running: nothing to pause"},
		{"resume a paused rollout", "resume", paused, want{state: api.RolloutRunning, phase: api.PhaseBatches,
			event: Event{"rollout.resumed", "rollout to revision 2 resumed"}, progress: true}, ""},
		{"resume a running rollout", "resume", running, want{}, "rollout r is running, not paused: nothing to resume"},
		{"resume a canary awaiting promotion", "resume", awaiting, want{},
			"rollout r waits for its canary to be promoted: use `dockfleet rollout promote`"},
		{"promote a canary awaiting promotion", "promote", awaiting, want{state: api.RolloutRunning, phase: api.PhaseBatches,
			event: Event{"rollout.promoted", "canary promoted; continuing with the remaining batches"}, progress: true, promoted: true}, ""},
		{"promote without a canary", "promote", running, want{},
			"rollout r has no canary awaiting promotion (state running, phase batches)"},
		{"promote twice", "promote", promoted, want{},
			"rollout r has no canary awaiting promotion (state running, phase batches)"},
		{"promote a rollout a user paused", "promote", paused, want{},
			"rollout r has no canary awaiting promotion (state paused, phase batches)"},
		{"promote a superseded canary", "promote", at(api.RolloutSuperseded, api.PhaseAwaitingPromotion), want{},
			"rollout r has no canary awaiting promotion (state superseded, phase awaiting-promotion)"},
		{"abort a running rollout", "abort", running, want{state: api.RolloutAborted, phase: api.PhaseDone,
			message: "aborted; returned 2 instances to revision 1",
			event:   Event{"rollout.aborted", "rollout to revision 2 aborted; returned 2 instances to revision 1"}, moves: 2}, ""},
		{"abort a canary awaiting promotion", "abort", awaiting, want{state: api.RolloutAborted, phase: api.PhaseDone,
			message: "aborted; returned 2 instances to revision 1",
			event:   Event{"rollout.aborted", "rollout to revision 2 aborted; returned 2 instances to revision 1"}, moves: 2}, ""},
	}
	// No action changes a rollout that ended.
	for _, state := range []api.RolloutState{api.RolloutSucceeded, api.RolloutFailed, api.RolloutRolledBack, api.RolloutAborted, api.RolloutSuperseded} {
		ended := at(state, api.PhaseDone)
		tests = append(tests,
			actionCase{"pause a rollout that " + string(state), "pause", ended, want{}, fmt.Sprintf("rollout r is %s, not running: nothing to pause", state)},
			actionCase{"resume a rollout that " + string(state), "resume", ended, want{}, fmt.Sprintf("rollout r is %s, not paused: nothing to resume", state)},
			actionCase{"promote a rollout that " + string(state), "promote", ended, want{},
				fmt.Sprintf("rollout r has no canary awaiting promotion (state %s, phase done)", state)},
			actionCase{"abort a rollout that " + string(state), "abort", ended, want{}, fmt.Sprintf("rollout r already ended (%s): nothing to abort", state)},
		)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := actions[tc.action](tc.r, now)
			if tc.refused != "" {
				var refused *RefusedError
				if !errors.As(err, &refused) || refused.Action != tc.action || err.Error() != tc.refused {
					t.Fatalf("got %+v, error %v; want a refusal to %s: %q", res.Rollout, err, tc.action, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want %s to succeed", err, tc.action)
			}
			got := res.Rollout
			if got.State != tc.want.state || got.Phase != tc.want.phase || got.Message != tc.want.message || got.Promoted != tc.want.promoted {
				t.Errorf("got rollout %s/%s %q promoted %v; want %s/%s %q promoted %v", got.State, got.Phase, got.Message, got.Promoted,
					tc.want.state, tc.want.phase, tc.want.message, tc.want.promoted)
			}
			if len(res.Events) != 1 || res.Events[0] != tc.want.event {
				t.Errorf("got events %+v; want [%+v]", res.Events, tc.want.event)
			}
			wantProgress := tc.r.LastProgress
			if tc.want.progress {
				wantProgress = now
			}
			if !got.LastProgress.Equal(wantProgress) {
				t.Errorf("got lastProgress %v; want %v", got.LastProgress, wantProgress)
			}
			if !res.Changed || !got.UpdatedAt.Equal(now) {
				t.Errorf("got changed %v, updatedAt %v; want changed at %v", res.Changed, got.UpdatedAt, now)
			}
			if len(res.Moves) != tc.want.moves {
				t.Errorf("got moves %+v; want %d", res.Moves, tc.want.moves)
			}
			for _, m := range res.Moves {
				if m.Revision != tc.r.From {
					t.Errorf("got move %+v; want back to revision %d", m, tc.r.From)
				}
			}
		})
	}
}

func TestPrePullBeforeTheFirstBatch(t *testing.T) {
	w := newWorld(4, 1)
	for k := range w.insts {
		w.insts[k].NodeID = w.insts[k].NodeName
	}
	u := update(n(2), n(2), n(0))
	u.PrePull = true
	r, events := run(t, w, newRollout(1, 2), u, time.Hour, func(now time.Time, res Result) {
		// Nodes answer one per second, n03 with the registry's refusal.
		k := int(now.Sub(t0) / time.Second)
		if k < len(w.insts) {
			if w.insts[k].NodeName == "n03" {
				w.insts[k].PullError = "manifest unknown"
			} else {
				w.insts[k].Pulled = true
			}
		}
	})
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	got := strings.Join(types, " ")
	want := "prepull.started image.pulled image.pulled image.pulled instance.failed prepull.done rollout.rolled_back"
	if got != want {
		t.Errorf("events %q; want %q", got, want)
	}
	if r.State != api.RolloutRolledBack || len(w.moved) != 0 || !strings.Contains(r.Message, "1 of 4 instances failed") {
		t.Errorf("rollout %s (%s), %d moved; want rolled back before any batch, nothing moved", r.State, r.Message, len(w.moved))
	}

	// With a failure allowed, the batches follow the pre-pull and skip the failed node.
	w = newWorld(4, 1)
	for k := range w.insts {
		w.insts[k].NodeID = w.insts[k].NodeName
		w.insts[k].Pulled = w.insts[k].NodeName != "n03"
		if !w.insts[k].Pulled {
			w.insts[k].PullError = "manifest unknown"
		}
	}
	u.MaxFailureRatio = 0.25
	r, events = run(t, w, newRollout(1, 2), u, time.Hour, nil)
	if r.State != api.RolloutSucceeded || len(w.moved) != 3 || r.Failed != 1 {
		t.Errorf("rollout %s (%s), %d moved, %d failed; want succeeded with 3 moved and 1 pull failure", r.State, r.Message, len(w.moved), r.Failed)
	}
	firstBatch, lastPull := -1, -1
	for k, e := range events {
		if e.Type == "batch.started" && firstBatch < 0 {
			firstBatch = k
		}
		if e.Type == "image.pulled" || e.Type == "prepull.done" {
			lastPull = k
		}
	}
	if firstBatch < lastPull {
		t.Errorf("a batch started (event %d) before the pre-pull ended (event %d)", firstBatch, lastPull)
	}
}

func TestBatchesSpreadOverNodes(t *testing.T) {
	var insts []Instance
	for _, node := range []string{"c", "a", "0-down", "b"} {
		for k := range 3 {
			insts = append(insts, Instance{ID: fmt.Sprintf("%s%d", node, k), NodeName: node, Revision: 1, Reachable: node != "0-down",
				State: api.InstanceHealthy, Checked: true})
		}
	}
	// 0-down is unreachable: it sorts first by name but goes last.
	res := Step(newRollout(1, 2), update(n(4), n(4), n(0)), insts, t0)
	var got []string
	for _, m := range res.Moves {
		got = append(got, m.ID)
	}
	if strings.Join(got, " ") != "a0 b0 c0 a1" {
		t.Errorf("first batch %v; want one instance of each reachable node first: a0 b0 c0 a1", got)
	}
}

func TestFailed(t *testing.T) {
	deadline := t0.Add(time.Minute)
	tests := []struct {
		name     string
		i        Instance
		deadline time.Time
		now      time.Time
		failed   bool
		recheck  time.Time
	}{
		{"cannot start", Instance{State: api.InstanceFailed, Reachable: true}, time.Time{}, t0, true, time.Time{}},
		{"crash-looping after its batch", Instance{State: api.InstanceFailed, Reachable: true}, time.Time{}, t0, true, time.Time{}},
		{"unhealthy", Instance{State: api.InstanceUnhealthy, Reachable: true, Checked: true}, deadline, t0, true, time.Time{}},
		{"restarting in its batch", Instance{State: api.InstanceStarting, Reason: "exited with code 137; restarting", Reachable: true, Checked: true},
			deadline, t0, false, deadline},
		{"restarting after its batch", Instance{State: api.InstanceStarting, Reachable: true, Checked: true}, time.Time{}, t0, false, time.Time{}},
		{"recreated, pulling", Instance{State: api.InstancePulling, Reachable: true, Checked: true}, deadline, t0, false, deadline},
		{"not healthy by the deadline", Instance{State: api.InstanceRunning, Reachable: true, Checked: true}, deadline, deadline, true, time.Time{}},
		{"healthy", Instance{State: api.InstanceHealthy, Reachable: true, Checked: true}, deadline, deadline.Add(time.Hour), false, time.Time{}},
		{"running unchecked", Instance{State: api.InstanceRunning, Reachable: true}, deadline, deadline, false, time.Time{}},
		{"unreachable", Instance{State: api.InstanceFailed}, deadline, deadline, false, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			failed, recheck := Failed(tt.i, tt.deadline, tt.now)
			if failed != tt.failed || !recheck.Equal(tt.recheck) {
				t.Errorf("got failed %v, recheck %v; want %v, %v", failed, recheck, tt.failed, tt.recheck)
			}
		})
	}
}

// TestFirstRolloutFailureKeepsWhatRuns: a first rollout has no earlier
// revision to return to, so a failure stops it and removes nothing, with
// or without autoRollback; the healthy instances keep running.
func TestFirstRolloutFailureKeepsWhatRuns(t *testing.T) {
	for _, autoRollback := range []bool{true, false} {
		t.Run(fmt.Sprint("autoRollback=", autoRollback), func(t *testing.T) {
			u := update(n(1), n(1), n(0))
			u.MinHealthyTime, u.AutoRollback = 0, autoRollback
			insts := []Instance{
				{ID: "a", NodeName: "n1", Revision: 1, State: api.InstanceHealthy, Since: t0, Reachable: true, Checked: true},
				{ID: "b", NodeName: "n2", Revision: 1, State: api.InstanceFailed, Reason: "pulling image: not found", Since: t0, Reachable: true, Checked: true},
				{ID: "c", NodeName: "n3", Revision: 0, State: api.InstancePending, Since: t0, Reachable: true, Checked: true},
			}
			r := newRollout(0, 1)
			r.Phase, r.Batch, r.Batches, r.BatchInstances, r.BatchStarted = api.PhaseBatches, 2, 3, []string{"b"}, t0
			res := Step(r, u, insts, t0.Add(time.Second))
			if res.Rollout.State != api.RolloutFailed {
				t.Fatalf("state %s; want failed", res.Rollout.State)
			}
			if len(res.Moves) != 0 {
				t.Errorf("moves %+v; want none", res.Moves)
			}
			for _, want := range []string{"pulling image: not found", "no earlier revision"} {
				if !strings.Contains(res.Rollout.Message, want) {
					t.Errorf("message %q; want it to say %q", res.Rollout.Message, want)
				}
			}
		})
	}
}
