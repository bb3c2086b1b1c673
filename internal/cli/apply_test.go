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
		{Project: "default", Name: "api", Action: api.ActionConfigured, Revision: 2},
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
