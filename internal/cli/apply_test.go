package cli

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
)

const helloSpec = "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata:\n  name: hello\n"

func TestApplyPrintsEachResult(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/apply", http.StatusOK, api.ApplyResponse{Results: []api.ApplyResult{
		{Project: "default", Name: "hello", Action: api.ActionCreated, Revision: 1},
		{Project: "default", Name: "api", Action: api.ActionConfigured, Revision: 2,
			Warnings: []string{"image 10.0.0.5:5000/api:2 was not resolved at apply (registry: unreachable)"}},
		{Project: "default", Name: "web", Action: api.ActionUnchanged, Revision: 4},
		{Project: "ops", Name: "probe", Action: api.ActionCreated, Revision: 1},
	}})
	file := filepath.Join(t.TempDir(), "hello.yaml")
	if err := os.WriteFile(file, []byte(helloSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, "", f.args("apply", "-f", file)...)
	checkOutput(t, r, exitOK, lines(
		"deployment/hello created (revision 1)",
		"deployment/api configured (revision 2)",
		"deployment/web unchanged",
		"deployment/probe created (project ops, revision 1)",
	))
	if want := "warning: deployment/api: image 10.0.0.5:5000/api:2 was not resolved at apply (registry: unreachable)\n"; r.stderr != want {
		t.Errorf("stderr %q; want %q", r.stderr, want)
	}
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests; want 1", len(reqs))
	}
	if got := reqs[0]; got.Body != helloSpec || got.Query != "filename="+url.QueryEscape(file) {
		t.Errorf("request %+v; want the file as it is, named %s", got, file)
	}
}

func TestApplyStdin(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/apply", http.StatusOK, api.ApplyResponse{Results: []api.ApplyResult{
		{Project: "default", Name: "hello", Action: api.ActionUnchanged, Revision: 1},
	}})
	r := runCLI(t, nil, helloSpec, f.args("apply", "-f", "-")...)
	checkOutput(t, r, exitOK, "deployment/hello unchanged\n")
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Body != helloSpec || reqs[0].Query != "filename=%3Cstdin%3E" {
		t.Errorf("requests %+v; want stdin sent as <stdin>", reqs)
	}
}

func TestApplyPrintsEveryValidationDetail(t *testing.T) {
	details := []string{
		"<stdin>:3: metadata.name: must not be empty",
		`<stdin>:7: spec.mode: "sometimes" is not global or replicated`,
		"<stdin>:12: spec.container.image: must not be empty",
	}
	f := newFakeAPI(t)
	f.on("POST /v1/apply", http.StatusBadRequest, api.Error{Error: "invalid spec", Details: details})
	r := runCLI(t, nil, helloSpec, f.args("apply", "-f", "-")...)
	checkOutput(t, r, exitFailure, "")
	want := lines(append([]string{"error: invalid spec"}, details...)...)
	if r.stderr != want {
		t.Errorf("stderr:\ngot:\n%s\nwant:\n%s", r.stderr, want)
	}
}

func TestApplyMissingFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "none.yaml")
	r := runCLI(t, nil, "", "apply", "-f", file)
	want := "error: reading spec: open " + file + ": no such file or directory\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("got %d %q; want %d %q", r.code, r.stderr, exitFailure, want)
	}
}

func TestApplyWait(t *testing.T) {
	results := api.ApplyResponse{Results: []api.ApplyResult{
		{Project: "default", Name: "hello", Action: api.ActionConfigured, Revision: 2, Rollout: "ab12cd"},
		{Project: "default", Name: "web", Action: api.ActionUnchanged, Revision: 4},
		{Project: "ops", Name: "api", Action: api.ActionCreated, Revision: 1, Rollout: "ef34ab"},
	}}
	helloDone := rolloutAt(func(ro *api.Rollout) {
		ro.State, ro.Phase, ro.Batch, ro.Updated, ro.Healthy, ro.Message = api.RolloutSucceeded, api.PhaseDone, 2, 4, 4, ""
	})
	apiAt := func(state api.RolloutState, msg string) api.Rollout {
		return api.Rollout{ID: "ef34ab", Project: "ops", Deployment: "api", To: 1, State: state, Phase: api.PhaseDone,
			Batch: 1, Batches: 1, Total: 3, Updated: 3, Healthy: 3, Message: msg}
	}
	tests := []struct {
		name       string
		api        api.Rollout
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:     "all succeed",
			api:      apiAt(api.RolloutSucceeded, ""),
			wantCode: exitOK,
			wantStdout: lines(
				"deployment/hello configured (revision 2)",
				"deployment/web unchanged",
				"deployment/api created (project ops, revision 1)",
				"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
				"deployment/hello revision 1 → 2: succeeded/done, batch 2 of 2, updated 4/4, healthy 4, failed 0",
				"rollout ab12cd succeeded: deployment/hello is at revision 2",
				"deployment/api revision 1 (first rollout): succeeded/done, batch 1 of 1, updated 3/3, healthy 3, failed 0",
				"rollout ef34ab succeeded: deployment/api is at revision 1",
			),
		},
		{
			name:     "one fails",
			api:      apiAt(api.RolloutFailed, "3 of 3 instances failed"),
			wantCode: exitFailure,
			wantStdout: lines(
				"deployment/hello configured (revision 2)",
				"deployment/web unchanged",
				"deployment/api created (project ops, revision 1)",
				"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
				"deployment/hello revision 1 → 2: succeeded/done, batch 2 of 2, updated 4/4, healthy 4, failed 0",
				"rollout ab12cd succeeded: deployment/hello is at revision 2",
				"deployment/api revision 1 (first rollout): failed/done, batch 1 of 1, updated 3/3, healthy 3, failed 0: 3 of 3 instances failed",
			),
			wantStderr: "error: rollout ef34ab of deployment/api failed: 3 of 3 instances failed\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.on("POST /v1/apply", http.StatusOK, results)
			f.onSeq("GET "+rolloutPath, okAnswer(rolloutAt(nil)), okAnswer(helloDone))
			f.on("GET /v1/projects/ops/deployments/api/rollout", http.StatusOK, tt.api)
			r := runCLI(t, nil, helloSpec, f.args(append([]string{"apply", "-f", "-", "--wait"}, tt.args...)...)...)
			checkOutput(t, r, tt.wantCode, tt.wantStdout)
			if r.stderr != tt.wantStderr {
				t.Errorf("stderr %q; want %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

func TestApplyWaitTimeout(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/apply", http.StatusOK, api.ApplyResponse{Results: []api.ApplyResult{
		{Project: "default", Name: "hello", Action: api.ActionConfigured, Revision: 2, Rollout: "ab12cd"},
		{Project: "ops", Name: "api", Action: api.ActionCreated, Revision: 1, Rollout: "ef34ab"},
	}})
	f.on("GET "+rolloutPath, http.StatusOK, rolloutAt(nil))
	r := runCLI(t, nil, helloSpec, f.args("apply", "-f", "-", "--wait", "--timeout", "50ms")...)
	checkOutput(t, r, exitFailure, lines(
		"deployment/hello configured (revision 2)",
		"deployment/api created (project ops, revision 1)",
		"deployment/hello revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0: waiting for batch 1 to be healthy for 10s",
	))
	want := "error: timed out after 50ms waiting for rollout ab12cd of deployment/hello (revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0)\n"
	if r.stderr != want {
		t.Errorf("stderr %q; want %q", r.stderr, want)
	}
	for _, req := range f.requests() {
		if req.Path == "/v1/projects/ops/deployments/api/rollout" {
			t.Errorf("api's rollout was asked for after the timeout")
		}
	}
}
