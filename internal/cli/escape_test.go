package cli

import (
	"net/http"
	"strings"
	"testing"
	"unicode"

	"github.com/dockfleet/dockfleet/internal/api"
)

// hostile is what a rogue node reported of itself and of its instance in
// the security review (finding 13): escape sequences that retitle the
// terminal, clear it, rewrite the line and hide text, and a bidirectional
// override that reorders it.
const hostile = "\x1b]0;owned\x07\x1b[2J\x1b[1;31mTRUSTED\x1b[0m\r\x1b[8m(hidden)\u202e\u009b"

// TestNodeStringsAreEscaped runs every command that prints what nodes
// report, over an API that returns it raw, as a server from before the
// server-side bounds (or a compromised one) would.
func TestNodeStringsAreEscaped(t *testing.T) {
	n := nodeWeb1
	n.Facts.Hostname, n.Error = hostile, hostile
	in := instances[0]
	in.Reason, in.ImageDigest = hostile, hostile
	f := newFakeAPI(t)
	f.on("GET /v1/nodes", http.StatusOK, []api.Node{n})
	f.on("GET /v1/nodes/web-1", http.StatusOK, n)
	f.on("GET /v1/projects/default/instances", http.StatusOK, []api.Instance{in})
	f.on("GET /v1/projects/default/deployments/hello", http.StatusOK, api.DeploymentStatus{Deployment: depHello, Instances: []api.Instance{in}})
	f.on("GET /v1/projects/default/deployments/hello/rollout", http.StatusOK, api.Rollout{ID: "ro-1", Deployment: "hello", State: api.RolloutFailed, Message: hostile})
	f.on("GET "+eventsPath, http.StatusOK, []api.Event{{Seq: 1, Time: testNow, Deployment: "hello", Type: "instance.failed", Message: hostile}})
	f.on("GET /v1/projects/default/deployments/nope", http.StatusNotFound, api.Error{Error: "no deployment: " + hostile})

	for _, args := range [][]string{
		{"nodes"},
		{"get", "nodes"},
		{"get", "instances"},
		{"describe", "node", "web-1"},
		{"describe", "deployment", "hello"},
		{"rollout", "status", "hello"},
		{"events"},
		{"get", "deployment", "nope"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, nil, "", f.args(args...)...)
			out := r.stdout + r.stderr
			if !strings.Contains(out, `\x1b]0;owned\a`) {
				t.Errorf("output does not show the hostile string escaped:\n%s", out)
			}
			for i, c := range out {
				if c != '\n' && (unicode.IsControl(c) || unicode.Is(unicode.Bidi_Control, c)) {
					t.Fatalf("output has the raw control character %U at byte %d:\n%q", c, i, out)
				}
			}
		})
	}
}
