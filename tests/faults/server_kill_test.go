package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// serverKills is how many times TestServerKilledDuringRollouts kills the
// server, and resumeWithin how soon after each restart the rollout must
// move: the bound. It holds because an agent that finds nobody
// listening retries within 2 s (internal/agent refusedBackoff) however often that
// happened, and the agents the rollout waits for report at once.
const (
	serverKills  = 20
	resumeWithin = 5 * time.Second
)

// TestServerKilledDuringRollouts kills the server with SIGKILL at random
// points of rollouts over six agents, 20 times, starting the next rollout
// whenever one ends: each restart resumes the rollout within 5 s, every rollout
// succeeds, no sample of docker ps ever shows two running containers
// of one instance, and every node ends with exactly one container, of the
// final revision.
func TestServerKilledDuringRollouts(t *testing.T) {
	f, nodes := webNodes(t, 6)
	r := faultRand(t)
	const update = "    batchSize: 2\n    minHealthyTime: 1s\n"
	images := []string{"hello:v1", "hello:v2"}
	round := 1
	f.Apply(harness.WebSpec(images[round%2], round, update))
	if ro := f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("first rollout: %s (%s)", ro.State, ro.Message)
	}
	w := watch(t, f)
	ctx := context.Background()

	// next starts the next rollout once the current one has ended.
	next := func() {
		t.Helper()
		ro, err := f.Client.GetRollout(ctx, api.DefaultProject, "web")
		if err != nil {
			t.Fatalf("getting the rollout: %v", err)
		}
		if !ro.State.Final() {
			return
		}
		if ro.State != api.RolloutSucceeded {
			t.Fatalf("rollout to revision %d (round %d) ended %s: %s; want succeeded", ro.To, round, ro.State, ro.Message)
		}
		round++
		f.Apply(harness.WebSpec(images[round%2], round, update))
		t.Logf("round %d: rollout to %s started", round, images[round%2])
	}
	// progress is what changes when the server steps the rollout.
	// A failed read (the server is still starting) reads as no change.
	progress := func(last string) (string, bool) {
		ro, err := f.Client.GetRollout(ctx, api.DefaultProject, "web")
		if err != nil {
			return last, false
		}
		return fmt.Sprintf("%s to revision %d %s/%s, batch %d/%d, %d updated, %d healthy, %d failed",
			ro.ID, ro.To, ro.State, ro.Phase, ro.Batch, ro.Batches, ro.Updated, ro.Healthy, ro.Failed), ro.State.Final()
	}

	for k := 1; k <= serverKills; k++ {
		next()
		wait, down := between(r, 200*time.Millisecond, 3*time.Second), between(r, 0, time.Second)
		time.Sleep(wait) // the fault's random moment, not a wait for an event
		before, _ := progress("unknown")
		t.Logf("fault %d/%d: kill -9 of the server %v into round %d (rollout %s), down for %v",
			k, serverKills, wait.Round(time.Millisecond), round, before, down.Round(time.Millisecond))
		f.Server.Kill()
		time.Sleep(down)
		f.StartServer()
		up := time.Now()
		at, final := progress("unknown")
		for !final {
			now, fin := progress(at)
			if now != at || fin {
				break
			}
			if time.Since(up) > resumeWithin {
				t.Fatalf("fault %d: the rollout did not move within %v of the server's restart: still %s", k, resumeWithin, at)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("fault %d: the rollout moved %v after the restart", k, time.Since(up).Round(time.Millisecond))
	}

	ro := f.WaitRollout("web", 120*time.Second)
	if ro.State != api.RolloutSucceeded {
		t.Fatalf("last rollout (round %d): %s (%s); want succeeded", round, ro.State, ro.Message)
	}
	insts := f.WaitHealthy("web", len(nodes), 30*time.Second)
	byNode := map[string]api.Instance{}
	for _, i := range insts {
		if i.Revision != ro.To {
			t.Errorf("instance %s on %s is on revision %d; want %d", i.ID, i.NodeName, i.Revision, ro.To)
		}
		byNode[i.NodeName] = i
	}
	w.check(t)
	want := images[round%2]
	for _, n := range nodes {
		cs := f.Containers(n)
		if len(cs) != 1 || cs[0].Image != want || cs[0].State != "running" || cs[0].ID != byNode[n].ContainerID {
			t.Errorf("%s ends with containers %s; want one running %s, the instance's %s", n, describe(cs), want, byNode[n].ContainerID)
		}
	}
	t.Logf("%d rollouts, %d kills", round-1, serverKills)
}
