package cli

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
)

func TestNodesTable(t *testing.T) {
	f := newCannedAPI(t)
	r := runCLI(t, nil, "", f.args("nodes")...)
	checkOutput(t, r, exitOK, lines(
		"NAME    ID       STATE         LABELS               LAST SEEN   CPU          MEMORY      CONTAINERS   ERROR",
		"web-1   n-1a2b   ready         role=web,zone=eu-1   3s ago      12.5% of 4   512Mi/8Gi   3            -",
		"web-2   n-3c4d   unreachable   -                    5m ago      -            -           0            docker: connection refused",
	))
}

func TestNodeLabel(t *testing.T) {
	f := newFakeAPI(t)
	after := nodeWeb1
	after.Labels = map[string]string{"role": "web", "tier": "edge"}
	f.on("PATCH /v1/nodes/web-1/labels", http.StatusOK, after)
	r := runCLI(t, nil, "", f.args("node", "label", "web-1", "tier=edge", "zone-", "example.com/empty=")...)
	checkOutput(t, r, exitOK, "node/web-1 labeled: role=web,tier=edge\n")
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests; want 1", len(reqs))
	}
	want := `{"set":{"example.com/empty":"","tier":"edge"},"remove":["zone"]}`
	if reqs[0].Body != want {
		t.Errorf("body %s; want %s", reqs[0].Body, want)
	}
}

func TestParseLabelPatch(t *testing.T) {
	tests := []struct {
		args    []string
		want    api.LabelPatch
		wantErr bool
	}{
		{args: []string{"a=1"}, want: api.LabelPatch{Set: map[string]string{"a": "1"}}},
		{args: []string{"a-"}, want: api.LabelPatch{Remove: []string{"a"}}},
		{args: []string{"a=", "b-", "c-"}, want: api.LabelPatch{Set: map[string]string{"a": ""}, Remove: []string{"b", "c"}}},
		{args: []string{"a=b=c"}, wantErr: true},
		{args: []string{"a"}, wantErr: true},
		{args: []string{"=v"}, wantErr: true},
		{args: []string{"a--"}, wantErr: true},
		{args: []string{"a-", "a-"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseLabelPatch(tt.args)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%q: got %+v; want an error", tt.args, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
}

func TestNodeRevoke(t *testing.T) {
	f := newFakeAPI(t)
	revoked := nodeWeb1
	revoked.State = api.NodeRevoked
	f.on("POST /v1/nodes/web-1/revoke", http.StatusOK, revoked)
	r := runCLI(t, nil, "", f.args("node", "revoke", "web-1")...)
	checkOutput(t, r, exitOK, "node/web-1 revoked\n")
}

func TestNodeRemove(t *testing.T) {
	f := newFakeAPI(t)
	msg := "node web-1 (n-1a2b) is connected: stop its agent first, or remove it anyway with dockfleet node rm --force (its connection is closed)"
	f.onFunc("DELETE /v1/nodes/web-1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("force") != "true" {
			writeAnswer(w, answer{http.StatusConflict, api.Error{Error: msg}})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	r := runCLI(t, nil, "", f.args("node", "rm", "web-1")...)
	checkOutput(t, r, exitFailure, "")
	if !strings.Contains(r.stderr, msg) {
		t.Errorf("stderr %q does not say %q", r.stderr, msg)
	}
	r = runCLI(t, nil, "", f.args("node", "rm", "web-1", "--force")...)
	checkOutput(t, r, exitOK, "node/web-1 removed\n")
	if reqs := f.requests(); len(reqs) != 2 || reqs[0].Query != "" || reqs[1].Query != "force=true" {
		t.Errorf("requests %+v; want one without and one with force=true", reqs)
	}
}

func TestNodeCordonDrainUncordon(t *testing.T) {
	f := newFakeAPI(t)
	cordoned, draining, drained := nodeWeb1, nodeWeb1, nodeWeb1
	cordoned.Scheduling, draining.Scheduling, drained.Scheduling = api.NodeCordoned, api.NodeDraining, api.NodeDrained
	f.on("POST /v1/nodes/web-1/cordon", http.StatusOK, cordoned)
	f.on("POST /v1/nodes/web-1/drain", http.StatusOK, draining)
	f.on("POST /v1/nodes/web-1/uncordon", http.StatusOK, nodeWeb1)
	f.on("GET /v1/nodes/"+nodeWeb1.ID, http.StatusOK, drained)

	checkOutput(t, runCLI(t, nil, "", f.args("node", "cordon", "web-1")...), exitOK, "node/web-1 cordoned\n")
	checkOutput(t, runCLI(t, nil, "", f.args("node", "drain", "web-1")...), exitOK, "node/web-1 draining\n")
	checkOutput(t, runCLI(t, nil, "", f.args("node", "drain", "web-1", "--wait")...), exitOK, "node/web-1 draining\nnode/web-1 drained\n")
	checkOutput(t, runCLI(t, nil, "", f.args("node", "undrain", "web-1")...), exitOK, "node/web-1 uncordoned\n")
	if r := runCLI(t, nil, "", f.args("node", "drain", "web-1", "--timeout", "1m")...); r.code != exitUsage {
		t.Errorf("drain --timeout without --wait: exit %d; want %d", r.code, exitUsage)
	}
}

func TestNodeDrainWaitGivesUp(t *testing.T) {
	f := newFakeAPI(t)
	draining := nodeWeb1
	draining.Scheduling = api.NodeDraining
	f.on("POST /v1/nodes/web-1/drain", http.StatusOK, draining)
	f.on("GET /v1/nodes/"+nodeWeb1.ID, http.StatusOK, draining)
	r := runCLI(t, nil, "", f.args("node", "drain", "web-1", "--wait", "--timeout", "100ms")...)
	checkOutput(t, r, exitFailure, "node/web-1 draining\n")
	if !strings.Contains(r.stderr, "still draining") {
		t.Errorf("stderr %q; want it to say the node is still draining", r.stderr)
	}
}

func TestNodesTableShowsScheduling(t *testing.T) {
	var b strings.Builder
	n := nodeWeb1
	n.Scheduling = api.NodeDraining
	if err := writeNodeTable(&b, []api.Node{n}, n.LastSeen); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "ready,draining") {
		t.Errorf("nodes table:\n%s\nwant state ready,draining", b.String())
	}
}
