package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// rolloutSpec is a global deployment of image over every node labelled
// role=web, with the given update block.
func rolloutSpec(image, update string) string {
	return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  mode: global
  selector:
    matchLabels:
      role: web
  container:
    image: %s
    healthCheck:
      http:
        path: /healthz
        port: 8080
      interval: 500ms
      retries: 2
  update:
%s`, image, update)
}

func sixNodes(t *testing.T) *harness.Fleet {
	t.Helper()
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	var specs [][2]string
	for i := 1; i <= 6; i++ {
		specs = append(specs, [2]string{fmt.Sprintf("w%d", i), "role=web"})
	}
	f.AddAgents(specs...)
	return f
}

func nodeNames(k int) []string {
	var out []string
	for i := 1; i <= k; i++ {
		out = append(out, fmt.Sprintf("w%d", i))
	}
	return out
}

// TestRolloutInBatches rolls v1 out over 6 nodes and then v2, in batches of
// 2: never more than 2 instances unavailable, each batch healthy for
// minHealthyTime before the next, every node on v2 at the end.
func TestRolloutInBatches(t *testing.T) {
	f := sixNodes(t)
	nodes := nodeNames(6)
	update := "    batchSize: 2\n    minHealthyTime: 2s\n"
	out := f.Apply(rolloutSpec("hello:v1", update))
	if !strings.Contains(out, "created (revision 1)") {
		t.Errorf("apply said %q", out)
	}
	if ro := f.WaitRollout("web", 60*time.Second); ro.State != api.RolloutSucceeded || ro.Batch != 3 {
		t.Fatalf("first rollout: %s after %d batches (%s); want succeeded in 3 batches of 2 — the first deployment follows the batches too", ro.State, ro.Batch, ro.Message)
	}

	// Watch availability while v2 rolls out.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	maxDown := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			is, err := f.Client.ListInstances(ctx, api.DefaultProject, "web")
			if err == nil {
				down := 0
				for _, i := range is {
					if i.State != api.InstanceHealthy {
						down++
					}
				}
				maxDown = max(maxDown, down)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	f.Apply(rolloutSpec("hello:v2", update))
	ro := f.WaitRollout("web", 90*time.Second)
	stop()
	wg.Wait()
	if ro.State != api.RolloutSucceeded || ro.From != 1 || ro.To != 2 {
		t.Fatalf("rollout %d→%d: %s (%s); want 1→2 succeeded", ro.From, ro.To, ro.State, ro.Message)
	}
	if maxDown > 2 {
		t.Errorf("up to %d instances were unavailable at once; want at most 2 (maxUnavailable defaults to batchSize)", maxDown)
	}
	for n, imgs := range f.Images(nodes...) {
		if len(imgs) != 1 || imgs[0] != "hello:v2" {
			t.Errorf("node %s runs %v; want hello:v2", n, imgs)
		}
	}
	// The timeline: each batch healthy at least minHealthyTime after it started.
	var started map[int]time.Time = map[int]time.Time{}
	batches := 0
	for _, e := range f.Events("web", "batch.started", "batch.healthy") {
		if e.Rollout != ro.ID {
			continue
		}
		var k, n int
		fmt.Sscanf(e.Message[strings.Index(e.Message, "batch "):], "batch %d of %d", &k, &n)
		switch e.Type {
		case "batch.started":
			started[k] = e.Time
			batches++
		case "batch.healthy":
			if took := e.Time.Sub(started[k]); took < 2*time.Second {
				t.Errorf("batch %d healthy %v after it started; want at least minHealthyTime 2s", k, took)
			}
		}
	}
	if batches != 3 {
		t.Errorf("%d batches in the event timeline; want 3", batches)
	}
	out, code := f.CLI("", "rollout", "status", "web")
	if code != 0 || !strings.Contains(out, "succeeded") {
		t.Errorf("rollout status: exit %d: %s", code, out)
	}
}

// TestBrokenCanaryRollsBack applies hello:broken over v2 with a canary of 1:
// the canary fails, the rollout stops and rolls it back, the CLI says so and
// exits non-zero, and the other nodes are never touched.
func TestBrokenCanaryRollsBack(t *testing.T) {
	f := sixNodes(t)
	nodes := nodeNames(6)
	quick := "    batchSize: 100%\n    minHealthyTime: 0s\n"
	f.Apply(rolloutSpec("hello:v2", quick))
	f.WaitRollout("web", 60*time.Second)
	before := map[string]string{}
	for _, n := range nodes {
		cs := f.Containers(n)
		if len(cs) != 1 {
			t.Fatalf("node %s runs %d containers; want 1", n, len(cs))
		}
		before[n] = cs[0].ID
	}

	out, code := f.CLI(rolloutSpec("hello:broken", "    batchSize: 2\n    canary: 1\n    autoPromote: true\n    minHealthyTime: 1s\n    healthyDeadline: 30s\n"),
		"apply", "-f", "-", "--wait", "--timeout", "90s")
	if code == 0 {
		t.Errorf("apply --wait of a broken image exited 0; want non-zero. Output:\n%s", out)
	}
	if !strings.Contains(out, "rolled_back") && !strings.Contains(out, "rolled back") {
		t.Errorf("apply --wait output does not say it rolled back:\n%s", out)
	}
	ro := f.WaitRollout("web", 10*time.Second)
	if ro.State != api.RolloutRolledBack || !strings.Contains(ro.Message, "status 500") {
		t.Fatalf("rollout %s (%s); want rolled_back naming the failed health check", ro.State, ro.Message)
	}
	harness.WaitFor(t, 30*time.Second, "every node back on hello:v2", func() error {
		for n, imgs := range f.Images(nodes...) {
			if len(imgs) != 1 || imgs[0] != "hello:v2" {
				return fmt.Errorf("%s runs %v", n, imgs)
			}
		}
		return nil
	})
	touched := 0
	for _, n := range nodes {
		if cs := f.Containers(n); len(cs) != 1 || cs[0].ID != before[n] {
			touched++
		}
	}
	if touched != 1 {
		t.Errorf("%d nodes had their container replaced; want only the canary's", touched)
	}
	if evs := f.Events("web", "instance.failed"); len(evs) != 1 {
		t.Errorf("instance.failed events: %+v; want one, for the canary", evs)
	}
}

// TestCanaryPromotePauseResumeUndo walks the manual controls.
func TestCanaryPromotePauseResumeUndo(t *testing.T) {
	f := sixNodes(t)
	nodes := nodeNames(6)
	f.Apply(rolloutSpec("hello:v1", "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitRollout("web", 60*time.Second)

	f.Apply(rolloutSpec("hello:v2", "    batchSize: 1\n    canary: 1\n    minHealthyTime: 1s\n"))
	harness.WaitFor(t, 60*time.Second, "the canary to await promotion", func() error {
		ro, err := f.Client.GetRollout(context.Background(), api.DefaultProject, "web")
		if err != nil || ro.Phase != api.PhaseAwaitingPromotion {
			return fmt.Errorf("%s %s %v", ro.State, ro.Phase, err)
		}
		return nil
	})
	v2 := 0
	for _, imgs := range f.Images(nodes...) {
		if imgs[0] == "hello:v2" {
			v2++
		}
	}
	if v2 != 1 {
		t.Errorf("%d nodes on v2 while the canary waits; want 1", v2)
	}
	if out, code := f.CLI("", "rollout", "promote", "web"); code != 0 {
		t.Fatalf("promote: exit %d: %s", code, out)
	}
	if out, code := f.CLI("", "rollout", "promote", "web"); code == 0 {
		t.Errorf("a second promote succeeded; want it refused. Output: %s", out)
	}
	if out, code := f.CLI("", "rollout", "pause", "web"); code != 0 {
		t.Fatalf("pause: exit %d: %s", code, out)
	}
	ro, _ := f.Client.GetRollout(context.Background(), api.DefaultProject, "web")
	paused := ro.Updated
	time.Sleep(4 * time.Second)
	if ro, _ = f.Client.GetRollout(context.Background(), api.DefaultProject, "web"); ro.State != api.RolloutPaused || ro.Updated > paused+1 {
		t.Errorf("while paused: state %s, updated %d (was %d); want paused with no new batch", ro.State, ro.Updated, paused)
	}
	if out, code := f.CLI("", "rollout", "resume", "web"); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, out)
	}
	if ro := f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("after resume: %s (%s)", ro.State, ro.Message)
	}

	out, code := f.CLI("", "rollout", "undo", "web", "--to-revision", "1")
	if code != 0 {
		t.Fatalf("undo: exit %d: %s", code, out)
	}
	ro = f.WaitRollout("web", 90*time.Second)
	if ro.State != api.RolloutSucceeded || ro.To != 3 {
		t.Fatalf("undo rollout: %s to %d (%s); want succeeded to revision 3", ro.State, ro.To, ro.Message)
	}
	for n, imgs := range f.Images(nodes...) {
		if len(imgs) != 1 || imgs[0] != "hello:v1" {
			t.Errorf("after undo to revision 1, %s runs %v; want hello:v1", n, imgs)
		}
	}
	out, _ = f.CLI("", "rollout", "history", "web")
	if !strings.Contains(out, "undo to revision 1") {
		t.Errorf("history does not show the undo:\n%s", out)
	}
	if out, code := f.CLI("", "rollout", "undo", "web", "--to-revision", "9"); code != 1 || !strings.Contains(out, "no revision 9") {
		t.Errorf("undo to a missing revision: exit %d: %s", code, out)
	}
}

// TestServerKilledMidRollout SIGKILLs the server during batch 2 of a 6-node
// rollout; after a restart it completes, and no node was updated twice.
func TestServerKilledMidRollout(t *testing.T) {
	f := sixNodes(t)
	nodes := nodeNames(6)
	f.Apply(rolloutSpec("hello:v1", "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	f.WaitRollout("web", 60*time.Second)

	// Record every container each node ever runs on v2.
	ctx, stop := context.WithCancel(context.Background())
	var mu sync.Mutex
	seen := map[string]map[string]bool{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for _, n := range nodes {
				for _, c := range f.Containers(n) {
					if c.Image == "hello:v2" {
						mu.Lock()
						if seen[n] == nil {
							seen[n] = map[string]bool{}
						}
						seen[n][c.ID] = true
						mu.Unlock()
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	f.Apply(rolloutSpec("hello:v2", "    batchSize: 2\n    minHealthyTime: 3s\n"))
	harness.WaitFor(t, 60*time.Second, "batch 2", func() error {
		ro, err := f.Client.GetRollout(context.Background(), api.DefaultProject, "web")
		if err != nil || ro.Batch < 2 {
			return fmt.Errorf("batch %d %v", ro.Batch, err)
		}
		return nil
	})
	f.Server.Kill()
	time.Sleep(time.Second)
	f.StartServer()
	ro := f.WaitRollout("web", 120*time.Second)
	stop()
	wg.Wait()
	if ro.State != api.RolloutSucceeded || ro.Batch != 3 {
		t.Fatalf("after the restart the rollout is %s at batch %d (%s); want succeeded after 3 batches", ro.State, ro.Batch, ro.Message)
	}
	for _, n := range nodes {
		cs := f.Containers(n)
		if len(cs) != 1 || cs[0].Image != "hello:v2" {
			t.Errorf("%s ends with %d containers (%v); want one on hello:v2", n, len(cs), cs)
		}
		if k := len(seen[n]); k != 1 {
			t.Errorf("%s ran %d different v2 containers; want 1 (updated once)", n, k)
		}
	}
}

// TestPinnedDigestsAndPrePull uses a real local registry: the server pins
// the tag to the registry's digest at apply and every instance runs that
// digest; a rollout with prePull has every node pull the new image before
// the first container is replaced; an image the registry does not have
// fails in the pre-pull, before anything changed, with the registry's reason.
func TestPinnedDigestsAndPrePull(t *testing.T) {
	f := sixNodes(t)
	reg := testenv.Registry(t)
	repo := reg + "/dockfleet/hello-" + testenv.ID()
	pinV1 := testenv.Push(t, "hello:v1", repo+":v1", true)
	pinV2 := testenv.Push(t, "hello:v2", repo+":v2", true)

	// The harness's server pins nothing unless a spec asks; these do.
	pinned := func(image, update string) string {
		return strings.Replace(rolloutSpec(image, update), "  mode: global\n", "  mode: global\n  imagePolicy: pinFromNodes\n", 1)
	}
	f.Apply(pinned(repo+":v1", "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	if ro := f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("first rollout: %s (%s)", ro.State, ro.Message)
	}
	revs, err := f.Client.ListRevisions(context.Background(), api.DefaultProject, "web")
	if err != nil || len(revs) != 1 || revs[0].ImageDigest != pinV1 {
		t.Fatalf("revisions = %+v, %v; want revision 1 pinned to %s", revs, err, pinV1)
	}
	harness.WaitFor(t, 10*time.Second, "every instance to report the pinned digest", func() error {
		for _, i := range f.Instances("web") {
			if i.ImageDigest != pinV1 {
				return fmt.Errorf("instance %s on %s runs %q", i.ID, i.NodeName, i.ImageDigest)
			}
		}
		return nil
	})
	out, _ := f.CLI("", "describe", "deployment", "web")
	short := "sha256:" + pinV1[strings.Index(pinV1, "@sha256:")+8:][:12]
	if strings.Count(out, short+" ") != 6 || !strings.Contains(out, "Pinned image:     "+pinV1+"\n") {
		t.Errorf("describe shows the digest %s %d times; want once per instance, and the pin %s in full:\n%s", short, strings.Count(out, short+" "), pinV1, out)
	}

	out, code := f.CLI(pinned(repo+":v2", "    batchSize: 2\n    minHealthyTime: 1s\n    prePull: true\n"), "apply", "-f", "-", "--wait", "--timeout", "120s")
	if code != 0 {
		t.Fatalf("apply --wait with prePull: exit %d:\n%s", code, out)
	}
	ro := f.WaitRollout("web", 10*time.Second)
	var order []string
	pulled := 0
	for _, e := range f.Events("web") {
		if e.Rollout != ro.ID {
			continue
		}
		switch e.Type {
		case "image.pulled":
			pulled++
			order = append(order, "pull")
		case "prepull.done", "batch.started":
			order = append(order, e.Type)
		}
	}
	if pulled != 6 || len(order) < 8 || order[6] != "prepull.done" || order[7] != "batch.started" {
		t.Errorf("event order %v; want 6 pulls, prepull.done, then the batches", order)
	}
	for _, i := range f.Instances("web") {
		if i.ImageDigest != pinV2 || i.Revision != 2 {
			t.Errorf("instance %s on %s: revision %d digest %q; want revision 2 on %s", i.ID, i.NodeName, i.Revision, i.ImageDigest, pinV2)
		}
	}

	before := map[string]string{}
	for _, n := range nodeNames(6) {
		before[n] = f.Containers(n)[0].ID
	}
	// A tag the registry does not have: the server asks it at apply and
	// refuses, with the registry's words, and nothing changes.
	out, code = f.CLI(pinned(repo+":absent", "    batchSize: 2\n    prePull: true\n"), "apply", "-f", "-")
	if code == 0 || !strings.Contains(out, "manifest unknown") {
		t.Errorf("a missing image: apply exit %d:\n%s\nwant it refused with the registry's reason", code, out)
	}
	if revs, err := f.Client.ListRevisions(context.Background(), api.DefaultProject, "web"); err != nil || len(revs) != 2 {
		t.Errorf("after a refused apply: %d revisions, %v; want still 2", len(revs), err)
	}
	// Unpinned, the server asks no registry: the nodes' pre-pull fails,
	// with the registry's reason, before any container changes.
	unpinned := strings.Replace(rolloutSpec(repo+":absent", "    batchSize: 2\n    prePull: true\n"), "  mode: global\n", "  mode: global\n  imagePolicy: unpinned\n", 1)
	out, code = f.CLI(unpinned, "apply", "-f", "-", "--wait", "--timeout", "120s")
	ro = f.WaitRollout("web", 10*time.Second)
	if code == 0 || ro.State != api.RolloutRolledBack || !strings.Contains(ro.Message, "manifest unknown") {
		t.Errorf("a missing unpinned image: apply exit %d, rollout %s (%s); want it to fail in the pre-pull with the registry's reason:\n%s", code, ro.State, ro.Message, out)
	}
	for _, n := range nodeNames(6) {
		if cs := f.Containers(n); len(cs) != 1 || cs[0].ID != before[n] {
			t.Errorf("node %s's container changed though the pre-pull failed", n)
		}
	}
}

// TestStartFirstKeepsServing rolls a replicated deployment with order:
// start-first and probes every container of it throughout: the number
// answering /healthz never drops below replicas - maxUnavailable.
func TestStartFirstKeepsServing(t *testing.T) {
	f := sixNodes(t)
	const replicas, maxUnavailable = 4, 1
	spec := func(image string) string {
		return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: %d
  container:
    image: %s
    healthCheck:
      http: {path: /healthz, port: 8080}
      interval: 500ms
  update:
    order: start-first
    batchSize: 1
    maxUnavailable: %d
    minHealthyTime: 1s
`, replicas, image, maxUnavailable)
	}
	f.Apply(spec("hello:v1"))
	if ro := f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("first rollout: %s (%s)", ro.State, ro.Message)
	}

	sdk := testenv.SDK(t)
	hc := &http.Client{Timeout: 300 * time.Millisecond}
	serving := func() int {
		n := 0
		for _, node := range nodeNames(6) {
			for _, c := range f.Containers(node) {
				if c.State != "running" {
					continue
				}
				res, err := sdk.ContainerInspect(context.Background(), c.ID, client.ContainerInspectOptions{})
				if err != nil {
					continue
				}
				for _, nw := range res.Container.NetworkSettings.Networks {
					resp, err := hc.Get("http://" + nw.IPAddress.String() + ":8080/healthz")
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == 200 {
							n++
						}
					}
					break
				}
			}
		}
		return n
	}
	if got := serving(); got != replicas {
		t.Fatalf("%d containers serve before the rollout; want %d", got, replicas)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	least, samples := replicas, 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			least = min(least, serving())
			samples++
		}
	}()
	f.Apply(spec("hello:v2"))
	ro := f.WaitRollout("web", 120*time.Second)
	stop()
	wg.Wait()
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("start-first rollout: %s (%s)", ro.State, ro.Message)
	}
	t.Logf("at least %d of %d serving over %d samples", least, replicas, samples)
	if least < replicas-maxUnavailable {
		t.Errorf("only %d containers served at one point; want at least replicas - maxUnavailable = %d", least, replicas-maxUnavailable)
	}
	harness.WaitFor(t, 20*time.Second, "the old containers to go", func() error {
		total := 0
		for _, node := range nodeNames(6) {
			for _, c := range f.Containers(node) {
				total++
				if c.Image != "hello:v2" {
					return fmt.Errorf("%s still runs %s", node, c.Image)
				}
			}
		}
		if total != replicas {
			return fmt.Errorf("%d containers", total)
		}
		return nil
	})
}
