package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// rolloutSpec is harness.WebSpec's deployment "web" of image with the
// given update block: every apply of these tests changes the image.
func rolloutSpec(image, update string) string { return harness.WebSpec(image, 1, update) }

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
	// The timeline: each batch healthy at least minHealthyTime after it
	// started. Batches run one after another, so the events (in sequence
	// order) alternate started, healthy; pairing them by that order needs no
	// batch number, which api.Event has only in its words.
	var timeline []string
	var started time.Time
	batches := 0
	for _, e := range f.Events("web", "batch.started", "batch.healthy") {
		if e.Rollout != ro.ID {
			continue
		}
		timeline = append(timeline, e.Type)
		switch {
		case e.Type == "batch.started" && started.IsZero():
			started = e.Time
			batches++
		case e.Type == "batch.healthy" && !started.IsZero():
			if took := e.Time.Sub(started); took < 2*time.Second {
				t.Errorf("batch %d healthy %v after it started; want at least minHealthyTime 2s", batches, took)
			}
			started = time.Time{}
		default:
			t.Fatalf("events of rollout %s: %v; want batch.started and batch.healthy in turn", ro.ID, timeline)
		}
	}
	if batches != 3 || !started.IsZero() {
		t.Errorf("events of rollout %s: %v; want 3 batches, each started then healthy", ro.ID, timeline)
	}
	if out, code := f.CLI("", "rollout", "status", "web"); code != 0 || !strings.Contains(out, "succeeded") {
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
	testenv.Eventually(t, 30*time.Second, "every node back on hello:v2", func() error {
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

	// minHealthyTime 0: the server's pass that counts a batch healthy is the
	// one that would start the next, which the pause below relies on.
	f.Apply(rolloutSpec("hello:v2", "    batchSize: 1\n    canary: 1\n    minHealthyTime: 0s\n"))
	testenv.Eventually(t, 60*time.Second, "the canary to await promotion", func() error {
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
	paused, err := f.Client.GetRollout(context.Background(), api.DefaultProject, "web")
	if err != nil {
		t.Fatal(err)
	}
	// The batch in flight turns healthy while the rollout is paused. Once
	// the rollout's counts (which only the server's passes update) say that
	// every instance on the new revision is healthy, as the instances do,
	// the server has made the pass in which a running rollout would start
	// the next batch.
	var ro api.Rollout
	testenv.Eventually(t, 60*time.Second, "the paused rollout to count its updated instances healthy", func() error {
		ro, err = f.Client.GetRollout(context.Background(), api.DefaultProject, "web")
		if err != nil {
			return err
		}
		if ro.State != api.RolloutPaused {
			return fmt.Errorf("rollout %s (%s)", ro.State, ro.Message)
		}
		updated, healthy := 0, 0
		for _, i := range f.Instances("web") {
			if i.Revision == ro.To {
				updated++
				if i.State == api.InstanceHealthy {
					healthy++
				}
			}
		}
		if healthy != updated || ro.Updated != updated || ro.Healthy != healthy {
			return fmt.Errorf("%d of %d instances on revision %d healthy; the rollout counted %d of %d", healthy, updated, ro.To, ro.Healthy, ro.Updated)
		}
		return nil
	})
	// The canary is batch 1 and each batch after it updates one instance:
	// batch k has updated k. (The rollout's own count of updated instances
	// can lag its batch by one: a pass counts before it starts a batch.)
	if ro.Batch != paused.Batch || ro.Updated != ro.Batch {
		t.Errorf("while paused: batch %d, %d updated; want still batch %d, with as many updated (no new batch)", ro.Batch, ro.Updated, paused.Batch)
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

	// Record every container each node ever runs on v2. The watcher
	// leaves failing to the test: it keeps the first error it met.
	ids := map[string]string{}
	for _, n := range nodes {
		ids[n] = f.Node(n).ID
	}
	ctx, stop := context.WithCancel(context.Background())
	seen := map[string]map[string]bool{}
	var watchErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for n, id := range ids {
				cs, err := f.NodeContainers(ctx, id)
				if err != nil && ctx.Err() == nil && watchErr == nil {
					watchErr = err
				}
				for _, c := range cs {
					if c.Image == "hello:v2" {
						if seen[n] == nil {
							seen[n] = map[string]bool{}
						}
						seen[n][c.ID] = true
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	f.Apply(rolloutSpec("hello:v2", "    batchSize: 2\n    minHealthyTime: 3s\n"))
	testenv.Eventually(t, 60*time.Second, "batch 2", func() error {
		ro, err := f.Client.GetRollout(context.Background(), api.DefaultProject, "web")
		if err != nil || ro.Batch < 2 {
			return fmt.Errorf("batch %d %v", ro.Batch, err)
		}
		return nil
	})
	f.Server.Kill() // returns once the process is gone, its ports and files free
	f.StartServer()
	ro := f.WaitRollout("web", 120*time.Second)
	stop()
	wg.Wait() // seen and watchErr are the test's from here
	if watchErr != nil {
		t.Fatalf("watching the nodes' containers: %v", watchErr)
	}
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
	nodes := nodeNames(6)
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
	testenv.Eventually(t, 10*time.Second, "every instance to report the pinned digest", func() error {
		for _, i := range f.Instances("web") {
			if i.ImageDigest != pinV1 {
				return fmt.Errorf("instance %s on %s runs %q", i.ID, i.NodeName, i.ImageDigest)
			}
		}
		return nil
	})
	out, _ := f.CLI("", "describe", "deployment", "web")
	short := "sha256:" + pinV1[strings.Index(pinV1, "@sha256:")+8:][:12]
	if strings.Count(out, short+" ") != len(nodes) || !strings.Contains(out, "Pinned image:     "+pinV1+"\n") {
		t.Errorf("describe shows the digest %s %d times; want once per instance, and the pin %s in full:\n%s", short, strings.Count(out, short+" "), pinV1, out)
	}

	out, code := f.CLI(pinned(repo+":v2", "    batchSize: 2\n    minHealthyTime: 1s\n    prePull: true\n"), "apply", "-f", "-", "--wait", "--timeout", "120s")
	if code != 0 {
		t.Fatalf("apply --wait with prePull: exit %d:\n%s", code, out)
	}
	ro := f.WaitRollout("web", 10*time.Second)
	// Every node pulls before any batch starts: all image.pulled events
	// come before prepull.done, and prepull.done before every batch.started.
	var order []string
	pulled, done, lastPull, firstBatch := 0, -1, -1, -1
	for _, e := range f.Events("web") {
		if e.Rollout != ro.ID {
			continue
		}
		switch e.Type {
		case "image.pulled":
			pulled++
			lastPull = len(order)
		case "prepull.done":
			done = len(order)
		case "batch.started":
			if firstBatch < 0 {
				firstBatch = len(order)
			}
		default:
			continue
		}
		order = append(order, e.Type)
	}
	if pulled != len(nodes) || done < 0 || lastPull > done || firstBatch < done {
		t.Errorf("events of rollout %s: %v; want %d image.pulled, then prepull.done, then the batches", ro.ID, order, len(nodes))
	}
	for _, i := range f.Instances("web") {
		if i.ImageDigest != pinV2 || i.Revision != 2 {
			t.Errorf("instance %s on %s: revision %d digest %q; want revision 2 on %s", i.ID, i.NodeName, i.Revision, i.ImageDigest, pinV2)
		}
	}

	before := map[string]string{}
	for _, n := range nodes {
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
	for _, n := range nodes {
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

	ids := map[string]string{}
	for _, n := range nodeNames(6) {
		ids[n] = f.Node(n).ID
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if s, err := serving(ctx, f, hc, ids); err != nil || s.slow > 0 || s.up != replicas {
		t.Fatalf("before the rollout: %+v, %v; want %d containers serving", s, err, replicas)
	}
	// The watcher leaves failing to the test: it keeps the first error.
	var watchErr error
	least, samples, slow := replicas, 0, 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			s, err := serving(ctx, f, hc, ids)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				watchErr = err
				return
			case s.slow > 0:
				slow++
			default:
				least = min(least, s.up)
				samples++
			}
		}
	}()
	f.Apply(spec("hello:v2"))
	ro := f.WaitRollout("web", 120*time.Second)
	stop()
	wg.Wait() // least, samples, slow and watchErr are the test's from here
	if watchErr != nil {
		t.Fatalf("probing the containers: %v", watchErr)
	}
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("start-first rollout: %s (%s)", ro.State, ro.Message)
	}
	t.Logf("at least %d of %d serving over %d samples (%d more left out for a slow probe)", least, replicas, samples, slow)
	if samples == 0 {
		t.Fatalf("no sample of the serving containers during the rollout (%d left out for a slow probe)", slow)
	}
	if least < replicas-maxUnavailable {
		t.Errorf("only %d containers served at one point; want at least replicas - maxUnavailable = %d", least, replicas-maxUnavailable)
	}
	testenv.Eventually(t, 20*time.Second, "the old containers to go", func() error {
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

// servingSample is what one look at the containers found: how many answered
// their health check, and how many probes got no answer within
// slowProbe.
type servingSample struct{ up, slow int }

// slowProbe is how long a probe waits for an answer. One that waits longer
// is slow, not down: on a loaded machine (-race, packages in parallel on 2
// cores) a container can be slow to answer without being unavailable, so a
// sample with a slow probe counts neither way. A container that is down
// refuses the connection at once.
const slowProbe = 5 * time.Second

// serving probes /healthz of every running container of the nodes (name →
// ID) at once. It calls no method of t, for the watcher's goroutine.
func serving(ctx context.Context, f *harness.Fleet, hc *http.Client, ids map[string]string) (servingSample, error) {
	var addrs []string
	for n, id := range ids {
		cs, err := f.NodeContainers(ctx, id)
		if err != nil {
			return servingSample{}, fmt.Errorf("node %s: %w", n, err)
		}
		for _, c := range cs {
			if c.State != "running" {
				continue
			}
			addr := "" // a running container without an address does not serve
			if c.NetworkSettings != nil {
				for _, nw := range c.NetworkSettings.Networks {
					if nw != nil && nw.IPAddress.IsValid() {
						addr = nw.IPAddress.String()
					}
				}
			}
			addrs = append(addrs, addr)
		}
	}
	type result struct{ up, slow bool }
	results := make(chan result, len(addrs))
	for _, addr := range addrs {
		go func() {
			if addr == "" {
				results <- result{}
				return
			}
			pctx, cancel := context.WithTimeout(ctx, slowProbe)
			defer cancel()
			req, err := http.NewRequestWithContext(pctx, http.MethodGet, "http://"+addr+":8080/healthz", nil)
			if err != nil {
				results <- result{}
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				results <- result{slow: errors.Is(err, context.DeadlineExceeded)}
				return
			}
			resp.Body.Close()
			results <- result{up: resp.StatusCode == http.StatusOK}
		}()
	}
	var s servingSample
	for range addrs {
		r := <-results
		if r.up {
			s.up++
		}
		if r.slow {
			s.slow++
		}
	}
	return s, nil
}
