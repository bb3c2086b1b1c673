package cli

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
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
		"Pinned image:     none yet",
		"Health check:     http GET :8080/healthz every 2s",
		"Created:          2026-03-01T11:50:00Z (10m ago)",
		"Updated:          2026-03-01T11:59:00Z (1m ago)",
		"",
		"Instances:",
		"  ID          NODE    REVISION   STATE     HEALTH      RESTARTS   CONTAINER      DIGEST                LAST ERROR",
		"  i-hello-1   web-1   2          healthy   healthy     0          0123456789ab   sha256:4f2a9c61b7de   -",
		"  i-hello-2   web-2   2          failed    unhealthy   4          -              -                     exited with code 1",
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
		"Pinned image:     none yet",
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

// TestDescribeDeploymentPin shows a revision's pin as stored, whatever its
// form, with the node that reported it, and says when the server ignores it.
func TestDescribeDeploymentPin(t *testing.T) {
	const digest = "sha256:4f2a9c61b7de0e5f7a3c1d2b8e9f60718293a4b5c6d7e8f90123456789abcdef"
	tests := []struct {
		name                 string
		pinned, byID, byName string
		want                 string
	}{
		{"resolved at apply", "hello@" + digest, "", "", "Pinned image:     hello@" + digest},
		{"by a node", "hello@" + digest, "n-1a2b", "web-1", "Pinned image:     hello@" + digest + " (pinned by node web-1, ID n-1a2b)"},
		{"unpinned", "", "", "", "Pinned image:     none (imagePolicy unpinned: each node runs the tag as its Docker has it)"},
		{"not a digest, stored by an older server", "attacker.example.com/backdoor:latest", "n-3c4d", "",
			"Pinned image:     attacker.example.com/backdoor:latest (pinned by node ?, ID n-3c4d) (ignored: not a digest of the image's repository)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCannedAPI(t)
			dep := depHello
			if tt.name == "unpinned" {
				dep.Spec.Spec.ImagePolicy = spec.ImagePolicyUnpinned
			}
			f.on("GET /v1/projects/default/deployments/hello", http.StatusOK, api.DeploymentStatus{Deployment: dep,
				ImageDigest: tt.pinned, PinnedBy: tt.byID, PinnedByName: tt.byName})
			r := runCLI(t, nil, "", f.args("describe", "deployment", "hello")...)
			if r.code != exitOK || !strings.Contains(r.stdout, "\n"+tt.want+"\n") {
				t.Errorf("exit %d, stdout:\n%s\nwant the line %q", r.code, r.stdout, tt.want)
			}
		})
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
		"  ID          DEPLOYMENT   REVISION   STATE     HEALTH    RESTARTS   CONTAINER      DIGEST                LAST ERROR",
		"  i-hello-1   hello        2          healthy   healthy   0          0123456789ab   sha256:4f2a9c61b7de   -",
		"  i-api-1     api          1          running   -         0          fedcba987654   -                     -",
		"  i-api-2     api          1          pending   -         0          -              -                     -",
	))
}
