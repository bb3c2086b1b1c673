package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/restapi"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// rawNode is an enrolled node speaking the raw agent protocol: it sends
// heartbeats and what the test gives it, and keeps the desired states the
// server sends.
type rawNode struct {
	id      string
	send    chan *agentproto.AgentMessage
	desired chan *agentproto.DesiredState
	// containers is what its heartbeats say it runs.
	containers atomic.Int32
}

// startRawNode enrolls a node called name from src and connects it.
func (f *abuseFleet) startRawNode(t *testing.T, name, src string) *rawNode {
	t.Helper()
	conn := f.conn(t, src, f.enroll(t, name, src))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := openStream(ctx, conn)
	if err != nil {
		t.Fatalf("connecting %s: %v", name, err)
	}
	n, err := f.api.GetNode(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	rn := &rawNode{id: n.ID, send: make(chan *agentproto.AgentMessage), desired: make(chan *agentproto.DesiredState, 100)}
	go func() {
		tick := time.NewTicker(testHeartbeat)
		defer tick.Stop()
		for {
			m := &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Heartbeat{Heartbeat: &agentproto.Heartbeat{
				Usage: &agentproto.Usage{Containers: rn.containers.Load()}}}}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case m = <-rn.send:
			}
			if err := stream.Send(m); err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if d := m.GetDesired(); d != nil {
				select {
				case rn.desired <- d:
				default: // the test reads only what it waits for
				}
			}
		}
	}()
	return rn
}

// waitInstance waits for a desired state that gives the node an instance
// of deployment web whose container matches ok, and returns it with its
// container.
func (rn *rawNode) waitInstance(t *testing.T, what string, ok func(spec.Container) bool) (*agentproto.InstanceSpec, spec.Container) {
	t.Helper()
	deadline := time.After(ackWithin)
	var last []string
	for {
		select {
		case d := <-rn.desired:
			for _, in := range d.Instances {
				var c spec.Container
				if err := json.Unmarshal(in.Container, &c); err != nil {
					t.Fatalf("instance %s: container: %v", in.Id, err)
				}
				last = append(last, c.Image)
				if in.Deployment == "web" && ok(c) {
					return in, c
				}
			}
		case <-deadline:
			t.Fatalf("node %s: no instance of web %s within %v; images given: %q", rn.id, what, ackWithin, last)
		}
	}
}

// report sends the status of an instance running the image it says.
func (rn *rawNode) report(in *agentproto.InstanceSpec, digest string) {
	rn.send <- &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: &agentproto.InstanceStatus{
		InstanceId: in.Id, State: string(api.InstanceRunning), SpecHash: in.SpecHash, ContainerId: "c-" + in.Id,
		ObservedAt: time.Now().UnixNano(), ImageDigest: digest}}}
}

const (
	// unreachableImage names a registry on loopback port 1, where nothing
	// listens: the server gets no answer at apply.
	unreachableImage = "127.0.0.1:1/shop/web:1.0"
	hexA             = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hexB             = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func webSpec(image, extra string) string {
	return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: %s
    env: {DB_PASSWORD: s3cret}
%s`, image, extra)
}

// TestNodeCannotChooseTheFleetImage is the attack of the security review's
// finding 1, through the real protocol: the server cannot resolve a
// deployment's tag, and a hostile node reports "digests" naming an image of
// its choosing. No other node may be given that image; only a sha256 digest
// is taken from a node's report, on the spec's own repository, and the pin
// names the node that made it.
func TestNodeCannotChooseTheFleetImage(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	evil := f.startRawNode(t, "evil", "127.0.0.3")

	// No wait for health: the rollout ends as soon as both nodes run
	// their instances, and nodes that join later get revision 1 at once.
	const fast = "  update: {minHealthyTime: 0s}\n"
	resp, err := f.api.Apply(ctx, "web.yaml", "", []byte(webSpec(unreachableImage, fast)))
	if err != nil {
		t.Fatal(err)
	}
	if w := resp.Results[0].Warnings; len(w) != 1 || !strings.Contains(w[0], "not resolved at apply") || !strings.Contains(w[0], "unreachable") {
		t.Errorf("apply warnings: got %q; want one saying the image was not resolved, the registry unreachable", w)
	}
	in, _ := evil.waitInstance(t, "with the spec's image", func(c spec.Container) bool { return c.Image == unreachableImage })

	// Another image altogether, then a digest of another repository.
	evil.report(in, "attacker.example.com/backdoor:latest")
	otherRepo := "attacker.example.com/backdoor@sha256:" + hexB
	evil.report(in, otherRepo)
	// The second report is a well-formed digest, so it is stored on the
	// instance: once it is, the server has looked at both.
	testenv.Eventually(t, ackWithin, "evil's reports to be looked at", func() error {
		insts, err := f.api.ListInstances(ctx, api.DefaultProject, "web")
		if err != nil || len(insts) != 1 || insts[0].ImageDigest != otherRepo {
			return fmt.Errorf("instances of web: got %+v, %v; want evil's reporting %s", insts, err, otherRepo)
		}
		return nil
	})
	honest := f.startRawNode(t, "honest", "127.0.0.4")
	honestIn, c := honest.waitInstance(t, "", func(spec.Container) bool { return true })
	if c.Image != unreachableImage {
		t.Fatalf("honest node is given image %q; want the spec's %q", c.Image, unreachableImage)
	}
	honest.report(honestIn, "") // an image built on the node has no digest
	revs, err := f.api.ListRevisions(ctx, api.DefaultProject, "web")
	if err != nil || len(revs) != 1 || revs[0].ImageDigest != "" {
		t.Fatalf("revisions: got %+v, %v; want revision 1 not pinned", revs, err)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `msg="ignoring the image digest a node reported" node_id=`+evil.id) {
		t.Errorf("server log does not name the node whose report it ignored:\n%s", logs)
	}

	// A sha256 digest is all a node's report may pin, and the server puts
	// it on the spec's repository.
	evil.report(in, "sha256:"+hexA)
	want := "127.0.0.1:1/shop/web@sha256:" + hexA
	testenv.Eventually(t, ackWithin, "the pin of evil's digest", func() error {
		revs, err := f.api.ListRevisions(ctx, api.DefaultProject, "web")
		if err != nil || len(revs) != 1 || revs[0].ImageDigest != want || revs[0].PinnedBy != evil.id || revs[0].PinnedByName != "evil" {
			return fmt.Errorf("revisions: got %+v, %v; want revision 1 pinned to %s by evil (%s)", revs, err, want, evil.id)
		}
		return nil
	})
	// Nodes given an instance from now on pull the pinned digest (the
	// running ones keep their container: the spec did not change).
	late := f.startRawNode(t, "late", "127.0.0.5")
	late.waitInstance(t, "with the pinned image", func(c spec.Container) bool { return c.Image == want })
	evs, err := f.api.ListEvents(ctx, api.DefaultProject, "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var pinned []string
	for _, e := range evs {
		if e.Type == "image.pinned" {
			pinned = append(pinned, e.Message)
		}
	}
	if len(pinned) != 1 || !strings.Contains(pinned[0], want) || !strings.Contains(pinned[0], "node evil (ID "+evil.id+")") {
		t.Errorf("image.pinned events: got %q; want one naming %s and node evil (ID %s)", pinned, want, evil.id)
	}
	st, err := f.api.GetDeployment(ctx, api.DefaultProject, "web")
	if err != nil || st.ImageDigest != want || st.PinnedBy != evil.id || st.PinnedByName != "evil" {
		t.Errorf("deployment: got pin %q by %q (%q), %v; want %s by evil", st.ImageDigest, st.PinnedBy, st.PinnedByName, err, want)
	}

	// Undo carries the pin, and who made it, to the new revision.
	if _, err := f.api.Apply(ctx, "web.yaml", "", []byte(webSpec(unreachableImage, fast+"  replicas: 2\n  mode: replicated\n"))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.api.Undo(ctx, api.DefaultProject, "web", 1); err != nil {
		t.Fatal(err)
	}
	revs, err = f.api.ListRevisions(ctx, api.DefaultProject, "web")
	if err != nil || len(revs) != 3 || revs[2].ImageDigest != want || revs[2].PinnedBy != evil.id {
		t.Errorf("revisions after undo: got %+v, %v; want revision 3 pinned to %s by evil", revs, err, want)
	}
}

// registryStandIn answers every manifest request with status and body, as
// a registry would, and counts the requests.
func registryStandIn(t *testing.T, status int, body string) (addr string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, body)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), requests
}

// TestApplyRefusedByRegistry checks that a registry's answer other than a
// digest, or no answer under imagePolicy resolveOnServer, or a registry the
// server may not contact, refuses the whole apply with the reason, and
// that the apply changes nothing.
func TestApplyRefusedByRegistry(t *testing.T) {
	notFound, _ := registryStandIn(t, http.StatusNotFound, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
	denied, _ := registryStandIn(t, http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	elsewhere, contacted := registryStandIn(t, http.StatusNotFound, "")

	tests := []struct {
		name string
		cfg  Config
		// spec is applied after a document that would be accepted alone.
		spec string
		want []string
	}{
		// The stand-ins are local: the real resolver asks them.
		{"unknown tag", Config{Resolve: registry.Resolve}, webSpec(notFound+"/shop/web:absent", ""),
			[]string{"web.yaml: deployment web: spec.container.image: resolving image " + notFound + "/shop/web:absent: registry: not found: manifest unknown"}},
		{"access denied", Config{Resolve: registry.Resolve}, webSpec(denied+"/shop/web:1.0", ""),
			[]string{"registry: access denied: authentication required"}},
		{"unreachable, resolveOnServer in the spec", Config{}, webSpec(unreachableImage, "  imagePolicy: resolveOnServer\n"),
			[]string{"registry: unreachable", "imagePolicy resolveOnServer needs the server itself to reach the registry"}},
		{"unreachable, resolveOnServer by default", Config{ImagePolicy: spec.ImagePolicyResolveOnServer}, webSpec(unreachableImage, ""),
			[]string{"registry: unreachable", "imagePolicy resolveOnServer"}},
		{"registry not allowed", Config{Resolve: registry.Resolve, RegistryAllow: []string{"ghcr.io", "Index.Docker.IO"}}, webSpec(elsewhere+"/shop/web:1.0", ""),
			[]string{"spec.container.image: image " + elsewhere + "/shop/web:1.0: registry " + elsewhere + " is not allowed on this server; allowed: ghcr.io, docker.io"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startAbuseFleet(t, tt.cfg)
			ctx := context.Background()
			first := `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: "nginx@sha256:` + hexA + `"}
  imagePolicy: pinFromNodes
---
`
			_, err := f.api.Apply(ctx, "web.yaml", "", []byte(first+tt.spec))
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest {
				t.Fatalf("apply: got %v; want 400", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("apply: got %q; want it to say %q", err, w)
				}
			}
			if deps, err := f.api.ListDeployments(ctx, api.DefaultProject); err != nil || len(deps) != 0 {
				t.Errorf("deployments after a refused apply: got %+v, %v; want none", deps, err)
			}
		})
	}
	if n := contacted.Load(); n != 0 {
		t.Errorf("the registry not allowed got %d requests; want none", n)
	}

	// Where the deployment allows it, an unreachable registry is only a
	// warning, whatever the server's default. The real resolver, which
	// this fleet's registries (all local) must not hear from under unpinned.
	f := startAbuseFleet(t, Config{ImagePolicy: spec.ImagePolicyResolveOnServer, Resolve: registry.Resolve})
	resp, err := f.api.Apply(context.Background(), "web.yaml", "", []byte(webSpec(unreachableImage, "  imagePolicy: pinFromNodes\n")))
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Action != api.ActionCreated || len(resp.Results[0].Warnings) != 1 {
		t.Errorf("apply with imagePolicy pinFromNodes: got %+v, %v; want created with a warning", resp, err)
	}
	// An image built on the nodes, under unpinned: no registry is asked.
	local, asked := registryStandIn(t, http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	resp, err = f.api.Apply(context.Background(), "local.yaml", "", []byte(strings.Replace(webSpec(local+"/shop/web:dev", "  imagePolicy: unpinned\n"), "name: web", "name: local", 1)))
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Action != api.ActionCreated || len(resp.Results[0].Warnings) != 0 || asked.Load() != 0 {
		t.Errorf("apply with imagePolicy unpinned: got %+v, %v, %d registry requests; want created, no warning, no request", resp, err, asked.Load())
	}
}

// TestStoredPinIsChecked checks that a pin stored before reports were
// checked, naming another image, is neither sent to nodes nor carried by
// undo.
func TestStoredPinIsChecked(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	if _, err := f.api.Apply(ctx, "web.yaml", "", []byte(webSpec(unreachableImage, ""))); err != nil {
		t.Fatal(err)
	}
	// A pin a node chose before reports were checked.
	if _, err := f.srv.store.PinRevisionDigest(ctx, api.DefaultProject, "web", 1, "attacker.example.com/backdoor:latest", "n0", "old"); err != nil {
		t.Fatal(err)
	}
	f.srv.fleet.ctl.Need(controller.ReloadDeployments)
	n := f.startRawNode(t, "edge-1", "127.0.0.3")
	_, c := n.waitInstance(t, "", func(spec.Container) bool { return true })
	if c.Image != unreachableImage {
		t.Fatalf("node is given image %q; want the spec's %q, the stored pin ignored", c.Image, unreachableImage)
	}
	testenv.Eventually(t, ackWithin, "the warning of the invalid pin", func() error {
		if !strings.Contains(f.logs.String(), "ignoring a revision's invalid image pin") {
			return errors.New("the server did not warn of the invalid stored pin")
		}
		return nil
	})
	// Undo does not carry it either.
	if _, err := f.api.Undo(ctx, api.DefaultProject, "web", 1); err != nil {
		t.Fatal(err)
	}
	revs, err := f.api.ListRevisions(ctx, api.DefaultProject, "web")
	if err != nil || len(revs) != 2 || revs[1].ImageDigest != "" {
		t.Errorf("revisions after undo: got %+v, %v; want revision 2 unpinned", revs, err)
	}
}

func TestRegistryHosts(t *testing.T) {
	got, err := restapi.RegistryHosts([]string{"ghcr.io", "Index.Docker.IO", "docker.io", "10.0.0.5:5000", "localhost:5000", "[::1]:5000"})
	want := []string{"ghcr.io", "docker.io", "docker.io", "10.0.0.5:5000", "localhost:5000", "[::1]:5000"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("RegistryHosts: got %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"", "nginx", "ghcr.io/org", "https://ghcr.io", "ghcr.io:port"} {
		if got, err := restapi.RegistryHosts([]string{bad}); err == nil || !strings.Contains(err.Error(), "want a registry host or host:port") {
			t.Errorf("RegistryHosts(%q): got %q, %v; want an error", bad, got, err)
		}
	}
	if _, err := New(context.Background(), testConfig(t, Config{RegistryAllow: []string{"nginx"}})); err == nil {
		t.Error("New with --registry-allow nginx: got no error")
	}
}

// TestResolveOnServerTakesNoPinFromNodes checks that once the server's
// default is resolveOnServer, a deployment applied before (not pinned, no
// policy of its own) takes no pin from a node's report, even a valid one.
func TestResolveOnServerTakesNoPinFromNodes(t *testing.T) {
	dir := t.TempDir()
	t.Run("apply under pinFromNodes", func(t *testing.T) {
		f := startAbuseFleet(t, Config{DataDir: dir})
		if _, err := f.api.Apply(context.Background(), "web.yaml", "", []byte(webSpec(unreachableImage, ""))); err != nil {
			t.Fatal(err)
		}
	})
	f := startAbuseFleet(t, Config{DataDir: dir, ImagePolicy: spec.ImagePolicyResolveOnServer})
	ctx := context.Background()
	n := f.startRawNode(t, "edge-1", "127.0.0.3")
	in, _ := n.waitInstance(t, "with the spec's image", func(c spec.Container) bool { return c.Image == unreachableImage })
	reported := "127.0.0.1:1/shop/web@sha256:" + hexA
	n.report(in, reported)
	testenv.Eventually(t, ackWithin, "edge-1's report to be stored", func() error {
		insts, err := f.api.ListInstances(ctx, api.DefaultProject, "web")
		if err != nil || len(insts) != 1 || insts[0].ImageDigest != reported {
			return fmt.Errorf("instances of web: got %+v, %v; want edge-1's reporting %s", insts, err, reported)
		}
		return nil
	})
	other := f.startRawNode(t, "edge-2", "127.0.0.4")
	if _, c := other.waitInstance(t, "", func(spec.Container) bool { return true }); c.Image != unreachableImage {
		t.Errorf("edge-2 is given image %q; want the spec's %q, no pin from edge-1", c.Image, unreachableImage)
	}
	revs, err := f.api.ListRevisions(ctx, api.DefaultProject, "web")
	if err != nil || len(revs) != 1 || revs[0].ImageDigest != "" {
		t.Errorf("revisions: got %+v, %v; want revision 1 not pinned", revs, err)
	}
}
