package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dockfleet/dockfleet/internal/api"
)

// newCannedAPI serves the canned nodes, deployments and instances.
func newCannedAPI(t *testing.T) *fakeAPI {
	f := newFakeAPI(t)
	f.on("GET /v1/nodes", http.StatusOK, []api.Node{nodeWeb1, nodeWeb2})
	f.on("GET /v1/nodes/web-1", http.StatusOK, nodeWeb1)
	f.on("GET /v1/projects/default/deployments", http.StatusOK, []api.Deployment{depHello, depAPI})
	f.on("GET /v1/projects/default/deployments/hello", http.StatusOK,
		api.DeploymentStatus{Deployment: depHello, Instances: instances[:2]})
	f.on("GET /v1/projects/default/instances", http.StatusOK, instances)
	return f
}

func TestGetTables(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "deployments",
			args: []string{"get", "deployments"},
			want: lines(
				"NAME    MODE         REPLICAS   IMAGE      REVISION   AGE",
				"api     replicated   1/3        api:2.0    1          3h",
				"hello   global       1/2        hello:v1   2          10m",
			),
		},
		{
			name: "one deployment",
			args: []string{"get", "deploy", "hello"},
			want: lines(
				"NAME    MODE     REPLICAS   IMAGE      REVISION   AGE",
				"hello   global   1/2        hello:v1   2          10m",
			),
		},
		{
			name: "instances",
			args: []string{"get", "instances"},
			want: lines(
				"ID          DEPLOYMENT   NODE     REVISION   STATE     AGE   UPDATED   REASON",
				"i-api-2     api          n-1a2b   1          pending   3h    3h ago    -",
				"i-api-1     api          web-1    1          running   3h    3h ago    -",
				"i-hello-1   hello        web-1    2          healthy   1m    30s ago   -",
				"i-hello-2   hello        web-2    2          failed    1m    20s ago   exited with code 1",
			),
		},
		{
			name: "one instance",
			args: []string{"get", "instance", "i-hello-2"},
			want: lines(
				"ID          DEPLOYMENT   NODE    REVISION   STATE    AGE   UPDATED   REASON",
				"i-hello-2   hello        web-2   2          failed   1m    20s ago   exited with code 1",
			),
		},
		{
			name: "nodes",
			args: []string{"get", "nodes"},
			want: lines(
				"NAME    ID       STATE         LABELS               LAST SEEN   CPU          MEMORY      CONTAINERS   ERROR",
				"web-1   n-1a2b   ready         role=web,zone=eu-1   3s ago      12.5% of 4   512Mi/8Gi   3            -",
				"web-2   n-3c4d   unreachable   -                    5m ago      -            -           0            docker: connection refused",
			),
		},
		{
			name: "one node without an error has no ERROR column",
			args: []string{"get", "node", "web-1"},
			want: lines(
				"NAME    ID       STATE   LABELS               LAST SEEN   CPU          MEMORY      CONTAINERS",
				"web-1   n-1a2b   ready   role=web,zone=eu-1   3s ago      12.5% of 4   512Mi/8Gi   3",
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCannedAPI(t)
			checkOutput(t, runCLI(t, nil, "", f.args(tt.args...)...), exitOK, tt.want)
		})
	}
}

func TestGetInstancesOfDeployment(t *testing.T) {
	f := newCannedAPI(t)
	r := runCLI(t, nil, "", f.args("get", "instances", "--deployment", "hello", "-p", "default")...)
	if r.code != exitOK {
		t.Fatalf("exit code %d: %s", r.code, r.stderr)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/projects/default/instances" || reqs[0].Query != "deployment=hello" {
		t.Errorf("requests %+v; want one GET of the instances with deployment=hello", reqs)
	}
}

func TestGetUnknownInstance(t *testing.T) {
	f := newCannedAPI(t)
	r := runCLI(t, nil, "", f.args("get", "instance", "i-")...)
	want := "error: \"i-\" is the start of 4 instance IDs; give more of it\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("got %d %q; want %d %q", r.code, r.stderr, exitFailure, want)
	}
	r = runCLI(t, nil, "", f.args("get", "instance", "zzz")...)
	want = "error: instance \"zzz\" not found in project \"default\"\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("got %d %q; want %d %q", r.code, r.stderr, exitFailure, want)
	}
}

// TestGetStructured checks that -o json prints the API's JSON, and -o yaml
// the same object with the JSON field names.
func TestGetStructured(t *testing.T) {
	tests := []struct {
		args []string
		want any
	}{
		{[]string{"get", "deployments"}, []api.Deployment{depHello, depAPI}},
		{[]string{"get", "deployment", "hello"}, depHello},
		{[]string{"get", "instances"}, instances},
		{[]string{"get", "nodes"}, []api.Node{nodeWeb1, nodeWeb2}},
		{[]string{"get", "node", "web-1"}, nodeWeb1},
		{[]string{"nodes"}, []api.Node{nodeWeb1, nodeWeb2}},
	}
	for _, tt := range tests {
		for _, format := range []string{"json", "yaml"} {
			t.Run(strings.Join(tt.args, " ")+" "+format, func(t *testing.T) {
				f := newCannedAPI(t)
				r := runCLI(t, nil, "", f.args(append(tt.args, "-o", format)...)...)
				if r.code != exitOK {
					t.Fatalf("exit code %d: %s", r.code, r.stderr)
				}
				var got, want any
				wantJSON, err := json.Marshal(tt.want)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(wantJSON, &want); err != nil {
					t.Fatal(err)
				}
				if format == "json" {
					err = json.Unmarshal([]byte(r.stdout), &got)
				} else {
					err = yaml.Unmarshal([]byte(r.stdout), &got)
					got = normalizeYAML(got)
				}
				if err != nil {
					t.Fatalf("parsing output: %v\n%s", err, r.stdout)
				}
				gotJSON, _ := json.Marshal(got)
				wantJSON, _ = json.Marshal(want)
				if string(gotJSON) != string(wantJSON) {
					t.Errorf("got\n%s\nwant\n%s", gotJSON, wantJSON)
				}
			})
		}
	}
}

// normalizeYAML turns YAML's integers into JSON's float64, so that decoded
// YAML and decoded JSON compare equal.
func normalizeYAML(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = normalizeYAML(x)
		}
	case []any:
		for i, x := range v {
			v[i] = normalizeYAML(x)
		}
	case int:
		return float64(v)
	}
	return v
}

func TestYAMLKeepsJSONNamesAndOrder(t *testing.T) {
	f := newCannedAPI(t)
	r := runCLI(t, nil, "", f.args("get", "node", "web-1", "-o", "yaml")...)
	want := lines(
		"id: n-1a2b",
		"name: web-1",
		"labels:",
		"  role: web",
		"  zone: eu-1",
		"state: ready",
		`lastSeen: "2026-03-01T11:59:57Z"`,
		"facts:",
		"  agentVersion: 0.1.0",
		"  dockerVersion: 20.10.24",
		"  os: linux",
		"  arch: amd64",
		"  hostname: web-1.example",
		"  cpus: 4",
		"  memoryBytes: 8589934592",
		"usage:",
		"  cpuPercent: 12.5",
		"  memoryBytes: 536870912",
		"  containers: 3",
		`createdAt: "2026-02-27T12:00:00Z"`,
		"version: 0",
	)
	checkOutput(t, r, exitOK, want)
}

func TestEmptyListsAreEmpty(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/projects/default/deployments", http.StatusOK, nil)
	for format, want := range map[string]string{"json": "[]\n", "yaml": "[]\n"} {
		r := runCLI(t, nil, "", f.args("get", "deployments", "-o", format)...)
		checkOutput(t, r, exitOK, want)
	}
}
