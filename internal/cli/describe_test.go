package cli

import (
	"net/http"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
)

func TestDescribeDeployment(t *testing.T) {
	f := newCannedAPI(t)
	r := runCLI(t, nil, "", f.args("describe", "deployment", "hello")...)
	checkOutput(t, r, exitOK, lines(
		"Name:             hello",
		"Project:          default",
		"Revision:         2",
		"Stable revision:  none yet",
		"Mode:             global",
		"Replicas:         1/2 running",
		"Selector:         role=web",
		"Image:            hello:v1",
		"Health check:     http GET :8080/healthz every 2s",
		"Created:          2026-03-01T11:50:00Z (10m ago)",
		"Updated:          2026-03-01T11:59:00Z (1m ago)",
		"",
		"Instances:",
		"  ID          NODE    REVISION   STATE     HEALTH      CONTAINER      DIGEST                LAST ERROR",
		"  i-hello-1   web-1   2          healthy   healthy     0123456789ab   sha256:4f2a9c61b7de   -",
		"  i-hello-2   web-2   2          failed    unhealthy   -              -                     exited with code 1",
	))
}

func TestDescribeDeploymentInRollout(t *testing.T) {
	f := newCannedAPI(t)
	dep := depHello
	dep.StableRevision = 1
	f.on("GET /v1/projects/default/deployments/hello", http.StatusOK, api.DeploymentStatus{Deployment: dep})
	f.on("GET "+rolloutPath, http.StatusOK, rolloutAt(nil))
	r := runCLI(t, nil, "", f.args("describe", "deployment", "hello")...)
	checkOutput(t, r, exitOK, lines(
		"Name:             hello",
		"Project:          default",
		"Revision:         2",
		"Stable revision:  1",
		"Rollout:          ab12cd revision 1 → 2: running/batches, batch 1 of 2, updated 2/4, healthy 1, failed 0",
		"Rollout message:  waiting for batch 1 to be healthy for 10s",
		"Mode:             global",
		"Replicas:         0/0 running",
		"Selector:         role=web",
		"Image:            hello:v1",
		"Health check:     http GET :8080/healthz every 2s",
		"Created:          2026-03-01T11:50:00Z (10m ago)",
		"Updated:          2026-03-01T11:59:00Z (1m ago)",
		"",
		"Instances: none",
	))

	f.on("GET "+rolloutPath, http.StatusInternalServerError, api.Error{Error: "store unavailable"})
	r = runCLI(t, nil, "", f.args("describe", "deployment", "hello")...)
	checkOutput(t, r, exitFailure, "")
	if want := "error: store unavailable\n"; r.stderr != want {
		t.Errorf("stderr %q; want %q", r.stderr, want)
	}
}

func TestDescribeNode(t *testing.T) {
	f := newCannedAPI(t)
	r := runCLI(t, nil, "", f.args("describe", "node", "web-1")...)
	checkOutput(t, r, exitOK, lines(
		"Name:        web-1",
		"ID:          n-1a2b",
		"State:       ready",
		"Labels:      role=web,zone=eu-1",
		"Last seen:   2026-03-01T11:59:57Z (3s ago)",
		"Enrolled:    2026-02-27T12:00:00Z (2d ago)",
		"Hostname:    web-1.example",
		"Platform:    linux/amd64",
		"Agent:       0.1.0",
		"Docker:      20.10.24",
		"CPU:         12.5% of 4",
		"Memory:      512Mi/8Gi",
		"Containers:  3",
		"",
		"Instances in project default:",
		"  ID          DEPLOYMENT   REVISION   STATE     HEALTH    CONTAINER      DIGEST                LAST ERROR",
		"  i-hello-1   hello        2          healthy   healthy   0123456789ab   sha256:4f2a9c61b7de   -",
		"  i-api-1     api          1          running   -         fedcba987654   -                     -",
		"  i-api-2     api          1          pending   -         -              -                     -",
	))
}
