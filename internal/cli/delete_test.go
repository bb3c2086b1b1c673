package cli

import (
	"net/http"
	"testing"
)

func TestDeleteDeployment(t *testing.T) {
	f := newFakeAPI(t)
	f.on("DELETE /v1/projects/ops/deployments/hello", http.StatusNoContent, nil)
	r := runCLI(t, nil, "", f.args("delete", "deploy", "hello", "--project", "ops")...)
	checkOutput(t, r, exitOK, "deployment/hello deleted\n")
}
