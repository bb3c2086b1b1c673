package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
)

const rolloutPath = "/v1/projects/default/deployments/hello/rollout"

// rolloutAt is the canned rollout of hello from revision 1 to 2, changed by
// edit.
func rolloutAt(edit func(*api.Rollout)) api.Rollout {
	ro := api.Rollout{
		ID: "ab12cd", Project: "default", Deployment: "hello", From: 1, To: 2,
		State: api.RolloutRunning, Phase: api.PhaseBatches, Batch: 1, Batches: 2,
		Total: 4, Updated: 2, Healthy: 1, Message: "waiting for batch 1 to be healthy for 10s",
		CreatedAt: testNow.Add(-5 * time.Minute), UpdatedAt: testNow.Add(-time.Second),
	}
	if edit != nil {
		edit(&ro)
	}
	return ro
}

func TestRolloutStatus(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/projects/ops/deployments/hello/rollout", http.StatusOK, rolloutAt(nil))
	r := runCLI(t, nil, "", f.args("rollout", "status", "hello", "-p", "ops")...)
	checkOutput(t, r, exitOK, lines(
		"Deployment:  hello",
		"Rollout:     ab12cd",
		"Revision:    1 → 2",
		"State:       running",
		"Phase:       batches",
		"Batch:       1 of 2",
		"Updated:     2/4",
		"Healthy:     1",
		"Failed:      0",
		"Message:     waiting for batch 1 to be healthy for 10s",
		"Started:     2026-03-01T11:55:00Z (5m ago)",
	))
}

func TestRolloutStatusOfAFinalRolloutExitsZero(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET "+rolloutPath, http.StatusOK, rolloutAt(func(ro *api.Rollout) {
		ro.From, ro.To, ro.State, ro.Phase, ro.Batches = 0, 1, api.RolloutFailed, api.PhasePrePull, 0
		ro.Message = "pulling hello:v2 on web-2: manifest unknown"
	}))
	r := runCLI(t, nil, "", f.args("rollout", "status", "hello")...)
	checkOutput(t, r, exitOK, lines(
		"Deployment:  hello",
		"Rollout:     ab12cd",
		"Revision:    1 (first rollout)",
		"State:       failed",
		"Phase:       pre-pull",
		"Batch:       -",
		"Updated:     2/4",
		"Healthy:     1",
		"Failed:      0",
		"Message:     pulling hello:v2 on web-2: manifest unknown",
		"Started:     2026-03-01T11:55:00Z (5m ago)",
	))
}

func TestRolloutStatusWithoutRollout(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET "+rolloutPath, http.StatusNotFound, api.Error{Error: `deployment "hello" has no rollout`})
	for _, args := range [][]string{{"rollout", "status", "hello"}, {"rollout", "status", "hello", "-w"}} {
		r := runCLI(t, nil, "", f.args(args...)...)
		checkOutput(t, r, exitFailure, "")
		if want := "error: deployment \"hello\" has no rollout\n"; r.stderr != want {
			t.Errorf("%s: stderr %q; want %q", args, r.stderr, want)
		}
	}
}

func TestRolloutStatusWatch(t *testing.T) {
	running1 := rolloutAt(nil)
	running2 := rolloutAt(func(ro *api.Rollout) { ro.Batch, ro.Updated, ro.Healthy, ro.Message = 2, 4, 2, "" })
	tests := []struct {
		name       string
		answers    []answer
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name: "succeeded",
			answers: []answer{
				okAnswer(running1), okAnswer(running1), okAnswer(running2),
				okAnswer(rolloutAt(func(ro *api.Rollout) {
					ro.State, ro.Phase, ro.Batch, ro.Updated, ro.Healthy, ro.Message = api.RolloutSucceeded, api.PhaseDone, 2, 4, 4, ""
				})),
			},
			wantCode: exitOK,
			wantStdout: lines(
				"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
				"deployment/hello revision 1 → 2: running/batches, batch 2 of 2, updated 4/4, healthy 2, failed 0",
				"deployment/hello revision 1 → 2: succeeded/done, batch 2 of 2, updated 4/4, healthy 4, failed 0",
				"rollout ab12cd succeeded: deployment/hello is at revision 2",
			),
		},
		{
			name: "rolled back",
			answers: []answer{
				okAnswer(running1),
				okAnswer(rolloutAt(func(ro *api.Rollout) {
					ro.State, ro.Phase, ro.Failed = api.RolloutRolledBack, api.PhaseDone, 2
					ro.Message = "2 of 4 instances failed (max 25%); back at revision 1"
				})),
			},
			wantCode: exitFailure,
			wantStdout: lines(
				"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
				"deployment/hello revision 1 → 2: rolled_back/done, batch 1 of 2, updated 2/4, healthy 1, failed 2: 2 of 4 instances failed (max 25%); back at revision 1",
			),
			wantStderr: "error: rollout ab12cd of deployment/hello rolled back: 2 of 4 instances failed (max 25%); back at revision 1\n",
		},
		{
			name: "failed",
			answers: []answer{okAnswer(rolloutAt(func(ro *api.Rollout) {
				ro.State, ro.Message = api.RolloutFailed, "no progress for 10m"
			}))},
			wantCode: exitFailure,
			wantStdout: lines(
				"deployment/hello revision 1 → 2: failed/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: no progress for 10m",
			),
			wantStderr: "error: rollout ab12cd of deployment/hello failed: no progress for 10m\n",
		},
		{
			name: "aborted while paused",
			answers: []answer{
				okAnswer(rolloutAt(func(ro *api.Rollout) {
					ro.State, ro.Phase, ro.Message = api.RolloutPaused, api.PhaseAwaitingPromotion, ""
				})),
				okAnswer(rolloutAt(func(ro *api.Rollout) { ro.State, ro.Phase, ro.Message = api.RolloutAborted, api.PhaseDone, "" })),
			},
			wantCode: exitFailure,
			wantStdout: lines(
				"deployment/hello revision 1 → 2: paused/awaiting-promotion, batch 1 of 2, updated 2/4, healthy 1, failed 0",
				"deployment/hello revision 1 → 2: aborted/done, batch 1 of 2, updated 2/4, healthy 1, failed 0",
			),
			wantStderr: "error: rollout ab12cd of deployment/hello aborted\n",
		},
		{
			name: "superseded by a newer apply",
			answers: []answer{
				okAnswer(running1),
				okAnswer(rolloutAt(func(ro *api.Rollout) { ro.ID, ro.From, ro.To = "ef34ab", 1, 3 })),
			},
			wantCode: exitFailure,
			wantStdout: lines(
				"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
				"deployment/hello revision 1 → 2: superseded/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: rollout ef34ab to revision 3 took over",
			),
			wantStderr: "error: rollout ab12cd of deployment/hello superseded: rollout ef34ab to revision 3 took over\n",
		},
		{
			name: "a failing server is asked again",
			answers: []answer{
				okAnswer(running2),
				{http.StatusServiceUnavailable, api.Error{Error: "store unavailable"}},
				{http.StatusServiceUnavailable, api.Error{Error: "store unavailable"}},
				okAnswer(rolloutAt(func(ro *api.Rollout) {
					ro.State, ro.Phase, ro.Batch, ro.Updated, ro.Healthy, ro.Message = api.RolloutSucceeded, api.PhaseDone, 2, 4, 4, ""
				})),
			},
			wantCode: exitOK,
			wantStdout: lines(
				"deployment/hello revision 1 → 2: running/batches, batch 2 of 2, updated 4/4, healthy 2, failed 0",
				"deployment/hello revision 1 → 2: running/batches, batch 2 of 2, updated 4/4, healthy 2, failed 0 (retrying: store unavailable)",
				"deployment/hello revision 1 → 2: succeeded/done, batch 2 of 2, updated 4/4, healthy 4, failed 0",
				"rollout ab12cd succeeded: deployment/hello is at revision 2",
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.onSeq("GET "+rolloutPath, tt.answers...)
			r := runCLI(t, nil, "", f.args("rollout", "status", "hello", "-w")...)
			checkOutput(t, r, tt.wantCode, tt.wantStdout)
			if r.stderr != tt.wantStderr {
				t.Errorf("stderr %q; want %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

func TestRolloutStatusWatchTimeout(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET "+rolloutPath, http.StatusOK, rolloutAt(nil))
	r := runCLI(t, nil, "", f.args("rollout", "status", "hello", "--watch", "--timeout", "50ms")...)
	checkOutput(t, r, exitFailure, lines(
		"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
	))
	want := "error: timed out after 50ms waiting for rollout ab12cd of deployment/hello (revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0)\n"
	if r.stderr != want {
		t.Errorf("stderr %q; want %q", r.stderr, want)
	}
}

func TestRolloutStatusWatchInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var polls atomic.Int32
	f := newFakeAPI(t)
	f.onFunc("GET "+rolloutPath, func(w http.ResponseWriter, r *http.Request) {
		if polls.Add(1) == 1 {
			writeAnswer(w, okAnswer(rolloutAt(func(ro *api.Rollout) { ro.State = api.RolloutPaused })))
			return
		}
		cancel() // the user interrupts while the second poll is under way
		<-r.Context().Done()
	})
	r := runCLIContext(ctx, t, nil, "", f.args("rollout", "status", "hello", "-w")...)
	if want := "error: interrupted; rollout ab12cd of deployment/hello is still paused\n"; r.code != exitFailure || r.stderr != want {
		t.Errorf("got exit code %d, stderr %q; want %d, %q", r.code, r.stderr, exitFailure, want)
	}
}

func TestRolloutStatusJSON(t *testing.T) {
	f := newFakeAPI(t)
	ro := rolloutAt(nil)
	f.on("GET "+rolloutPath, http.StatusOK, ro)
	r := runCLI(t, nil, "", f.args("rollout", "status", "hello", "-o", "json")...)
	var got api.Rollout
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("exit code %d, stdout %q: %v", r.code, r.stdout, err)
	}
	if got.ID != ro.ID || got.State != ro.State || got.Batch != ro.Batch || !got.CreatedAt.Equal(ro.CreatedAt) {
		t.Errorf("got %+v; want %+v", got, ro)
	}
}

// TestProgressOnTerminal checks that a terminal gets one line redrawn in
// place, cut to its width, and ended before anything else is written.
func TestProgressOnTerminal(t *testing.T) {
	var out bytes.Buffer
	e := &env{stdout: &out, getenv: func(string) string { return "" }, termWidth: func() int { return 20 }}
	p := e.newProgress()
	p.show("short")
	p.show("short")
	p.show("a line longer than the terminal")
	p.end()
	p.end()
	want := "\rshort\x1b[K\ra line longer than…\x1b[K\n"
	if out.String() != want {
		t.Errorf("got %q; want %q", out.String(), want)
	}

	out.Reset()
	e.getenv = func(k string) string {
		if k == "TERM" {
			return "dumb"
		}
		return ""
	}
	p = e.newProgress()
	p.show("one")
	p.show("one")
	p.show("two")
	p.end()
	if want := "one\ntwo\n"; out.String() != want {
		t.Errorf("TERM=dumb: got %q; want %q", out.String(), want)
	}
}

func TestRolloutHistory(t *testing.T) {
	f := newFakeAPI(t)
	dep := depHello
	dep.Revision, dep.StableRevision = 3, 2
	f.on("GET /v1/projects/default/deployments/hello", http.StatusOK, api.DeploymentStatus{Deployment: dep})
	withImage := func(image string) spec.Deployment {
		d := depHello.Spec
		d.Spec.Container.Image = image
		return d
	}
	f.on("GET /v1/projects/default/deployments/hello/revisions", http.StatusOK, []api.Revision{
		{Project: "default", Deployment: "hello", Number: 1, Spec: withImage("hello:v1"), Cause: "apply",
			CreatedAt: testNow.Add(-3 * time.Hour)},
		{Project: "default", Deployment: "hello", Number: 2, Spec: withImage("hello:v2"), Cause: "apply",
			ImageDigest: "hello@sha256:5f0e4d4a2b9c", PinnedBy: "n-1a2b", PinnedByName: "web-1", CreatedAt: testNow.Add(-time.Hour)},
		{Project: "default", Deployment: "hello", Number: 3, Spec: withImage("hello:v1"), Cause: "undo to revision 1",
			CreatedAt: testNow.Add(-time.Minute)},
	})
	r := runCLI(t, nil, "", f.args("rollout", "history", "hello")...)
	checkOutput(t, r, exitOK, lines(
		"REVISION   CREATED   IMAGE                                              CAUSE                STATUS",
		"1          3h ago    hello:v1                                           apply                -",
		"2          1h ago    hello@sha256:5f0e4d4a2b9c (pinned by node web-1)   apply                stable",
		"3          1m ago    hello:v1                                           undo to revision 1   newest",
	))

	dep.StableRevision = 3
	f.on("GET /v1/projects/default/deployments/hello", http.StatusOK, api.DeploymentStatus{Deployment: dep})
	r = runCLI(t, nil, "", f.args("rollout", "history", "hello")...)
	if !strings.HasSuffix(r.stdout, "undo to revision 1   stable, newest\n") {
		t.Errorf("stdout:\n%s\nwant revision 3 marked stable, newest", r.stdout)
	}
}

func TestRolloutUndo(t *testing.T) {
	const undoPath = "/v1/projects/default/deployments/hello/rollout/undo"
	tests := []struct {
		name     string
		args     []string
		wantBody string
		want     string
	}{
		{
			name:     "to a revision",
			args:     []string{"--to-revision", "1"},
			wantBody: `{"toRevision":1}`,
			want:     "deployment/hello rolled back to revision 1 as revision 4 (rollout ef34ab)\n",
		},
		{
			name:     "to the one before the stable one",
			wantBody: `{}`,
			want:     "deployment/hello rolled back to revision 2 as revision 4 (rollout ef34ab)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.on("POST "+undoPath, http.StatusOK, api.ApplyResult{
				Project: "default", Name: "hello", Action: api.ActionConfigured, Revision: 4, Rollout: "ef34ab"})
			f.on("GET /v1/projects/default/deployments/hello/revisions", http.StatusOK, []api.Revision{
				{Number: 3, Cause: "apply"}, {Number: 4, Cause: "undo to revision 2"}})
			r := runCLI(t, nil, "", f.args(append([]string{"rollout", "undo", "hello"}, tt.args...)...)...)
			checkOutput(t, r, exitOK, tt.want)
			if reqs := f.requests(); len(reqs) == 0 || reqs[0].Path != undoPath || strings.TrimSpace(reqs[0].Body) != tt.wantBody {
				t.Errorf("requests %+v; want first a POST of %s to %s", reqs, tt.wantBody, undoPath)
			}
		})
	}

	t.Run("to the spec it runs", func(t *testing.T) {
		f := newFakeAPI(t)
		f.on("POST "+undoPath, http.StatusOK, api.ApplyResult{
			Project: "default", Name: "hello", Action: api.ActionUnchanged, Revision: 3})
		r := runCLI(t, nil, "", f.args("rollout", "undo", "hello", "--to-revision", "3")...)
		checkOutput(t, r, exitOK, "deployment/hello unchanged (revision 3)\n")
	})

	t.Run("without a cause to tell the revision by", func(t *testing.T) {
		f := newFakeAPI(t)
		f.on("POST "+undoPath, http.StatusOK, api.ApplyResult{
			Project: "default", Name: "hello", Action: api.ActionConfigured, Revision: 4, Rollout: "ef34ab"})
		r := runCLI(t, nil, "", f.args("rollout", "undo", "hello")...)
		checkOutput(t, r, exitOK, "deployment/hello rolled back as revision 4 (rollout ef34ab)\n")
	})

	t.Run("to a revision that does not exist", func(t *testing.T) {
		f := newFakeAPI(t)
		f.on("POST "+undoPath, http.StatusNotFound, api.Error{Error: `deployment "hello" has no revision 9`})
		r := runCLI(t, nil, "", f.args("rollout", "undo", "hello", "--to-revision", "9")...)
		checkOutput(t, r, exitFailure, "")
		if want := "error: deployment \"hello\" has no revision 9\n"; r.stderr != want {
			t.Errorf("stderr %q; want %q", r.stderr, want)
		}
	})
}

func TestRolloutActions(t *testing.T) {
	tests := []struct{ action, want string }{
		{"pause", "rollout ab12cd paused\n"},
		{"resume", "rollout ab12cd resumed\n"},
		{"abort", "rollout ab12cd aborted\n"},
		{"promote", "rollout ab12cd promoted\n"},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			f := newFakeAPI(t)
			path := "/v1/projects/ops/deployments/hello/rollout/" + tt.action
			f.on("POST "+path, http.StatusOK, rolloutAt(nil))
			r := runCLI(t, nil, "", f.args("rollout", tt.action, "hello", "-p", "ops")...)
			checkOutput(t, r, exitOK, tt.want)
			if reqs := f.requests(); len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != path {
				t.Errorf("requests %+v; want one POST %s", reqs, path)
			}
		})
	}

	t.Run("conflict", func(t *testing.T) {
		f := newFakeAPI(t)
		f.on("POST "+rolloutPath+"/promote", http.StatusConflict,
			api.Error{Error: `rollout ab12cd of "hello" is not awaiting promotion`})
		r := runCLI(t, nil, "", f.args("rollout", "promote", "hello")...)
		checkOutput(t, r, exitFailure, "")
		if want := "error: rollout ab12cd of \"hello\" is not awaiting promotion\n"; r.stderr != want {
			t.Errorf("stderr %q; want %q", r.stderr, want)
		}
	})
}
