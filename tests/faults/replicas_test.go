package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// The bounds for replicas: a new leader within 10 s of the
// leader's kill -9, and the agents of a killed replica at another within
// 30 s.
const (
	newLeaderWithin = 10 * time.Second
	reconnectWithin = 30 * time.Second
)

// replicaFleet starts three server replicas on one PostgreSQL and six agents
// w1…w6 labelled role=web, each given every replica, and rolls round 1 of
// hello:v1 out to all of them.
func replicaFleet(t *testing.T) (*harness.Fleet, []string) {
	t.Helper()
	testenv.HelloImages(t)
	f := harness.NewCluster(t, 3)
	var specs [][2]string
	var names []string
	for i := 1; i <= 6; i++ {
		names = append(names, fmt.Sprintf("w%d", i))
		specs = append(specs, [2]string{names[i-1], "role=web"})
	}
	f.AddAgents(specs...)
	f.Apply(harness.WebSpec("hello:v1", 1, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	if ro := f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("first rollout: %s (%s)", ro.State, ro.Message)
	}
	f.WaitHealthy("web", len(names), 30*time.Second)
	for _, n := range names {
		addr, _ := f.AgentServer(n)
		t.Logf("%s is connected to %s", n, f.ReplicaAt(addr).Name)
	}
	return f, names
}

// waitRound waits until every node runs exactly one container, running,
// with the image and ROUND=round in its environment, as Docker sees it.
func waitRound(t *testing.T, f *harness.Fleet, nodes []string, image string, round int, within time.Duration) {
	t.Helper()
	sdk := testenv.SDK(t)
	env := fmt.Sprintf("ROUND=%d", round)
	testenv.Eventually(t, within, fmt.Sprintf("every node to run round %d of %s", round, image), func() error {
		for _, n := range nodes {
			cs, err := f.NodeContainers(context.Background(), f.NodeIDs[n])
			if err != nil {
				return err
			}
			if len(cs) != 1 || cs[0].State != "running" || cs[0].Image != image {
				return fmt.Errorf("%s has containers %s", n, describe(cs))
			}
			res, err := sdk.ContainerInspect(context.Background(), cs[0].ID, client.ContainerInspectOptions{})
			if err != nil {
				return fmt.Errorf("inspecting %s's container: %w", n, err)
			}
			if !slices.Contains(res.Container.Config.Env, env) {
				return fmt.Errorf("%s runs %s with env %v; want %s", n, cs[0].ID[:12], res.Container.Config.Env, env)
			}
		}
		return nil
	})
}

// allStarts maps every node's containers (ID → when Docker last started it).
func allStarts(t *testing.T, f *harness.Fleet, nodes []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range nodes {
		for id, at := range startTimes(t, f.Containers(n)) {
			out[n+"/"+id] = at
		}
	}
	return out
}

// checkReady fails the test unless every node is ready.
func checkReady(t *testing.T, f *harness.Fleet, nodes []string) {
	t.Helper()
	for _, n := range nodes {
		if got := f.Node(n).State; got != api.NodeReady {
			t.Errorf("node %s is %s; want %s", n, got, api.NodeReady)
		}
	}
}

// checkNeverUnreachable fails the test if any replica ever logged a node
// unreachable.
func checkNeverUnreachable(t *testing.T, f *harness.Fleet, logs ...string) {
	t.Helper()
	for _, r := range f.Replicas {
		logs = append(logs, r.Proc.Out.String())
	}
	for _, out := range logs {
		if lines, _ := harness.LogLines(out, "node unreachable", time.Time{}); len(lines) > 0 {
			t.Errorf("a replica marked nodes unreachable; want none:\n%s", strings.Join(lines, "\n"))
		}
	}
}

// other returns a running replica other than r.
func other(t *testing.T, f *harness.Fleet, r *harness.Replica) *harness.Replica {
	t.Helper()
	for _, o := range f.Replicas {
		if o != r && o.Running() {
			return o
		}
	}
	t.Fatalf("no running replica but %s", r.Name)
	return nil
}

// TestReplicasChangeThroughEach applies a new round through each of three
// replicas in turn: every one of the six agents runs it, whichever replica
// took the apply and whichever holds the agent.
func TestReplicasChangeThroughEach(t *testing.T) {
	f, nodes := replicaFleet(t)
	leader := f.WaitLeader(10 * time.Second)
	t.Logf("leader: %s", leader.Name)
	for i, r := range f.Replicas {
		round := i + 2
		begin := time.Now()
		f.ApplyOn(r, harness.WebSpec("hello:v2", round, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
		waitRound(t, f, nodes, "hello:v2", round, 60*time.Second)
		t.Logf("round %d applied through %s (leader: %v): on all six agents %v after the apply", round, r.Name, r == leader,
			time.Since(begin).Round(time.Millisecond))
		if ro := f.WaitRollout("web", 30*time.Second); ro.State != api.RolloutSucceeded {
			t.Fatalf("rollout of round %d through %s: %s (%s); want succeeded", round, r.Name, ro.State, ro.Message)
		}
	}
	checkReady(t, f, nodes)
	checkNodeNames(t, f)
}

// checkNodeNames checks that every replica lists the deployment's
// instances with their node's name, whichever replica holds the node.
func checkNodeNames(t *testing.T, f *harness.Fleet) {
	t.Helper()
	for _, r := range f.Replicas {
		is, err := r.Client.ListInstances(context.Background(), api.DefaultProject, "web")
		if err != nil {
			t.Fatalf("listing instances through %s: %v", r.Name, err)
		}
		for _, i := range is {
			if i.NodeName == "" {
				t.Errorf("%s lists instance %s (node %s) without its node's name", r.Name, i.ID, i.NodeID)
			}
		}
	}
}

// TestReplicasLeaderKilledMidRollout kills the leader with SIGKILL while a
// rollout in batches is under way: another replica leads within 10 s, the
// rollout goes on where it was (the same rollout; what it had updated is not
// replaced again) and succeeds, no node is ever marked unreachable, and
// every node runs the revision the apply was acknowledged with.
func TestReplicasLeaderKilledMidRollout(t *testing.T) {
	f, nodes := replicaFleet(t)
	leader := f.WaitLeader(10 * time.Second)
	f.Use(other(t, f, leader))
	ctx := context.Background()

	// Three batches of two, each held a while healthy: the rollout lasts
	// long enough to be killed in the middle. The leader acknowledges the
	// apply that it dies in the middle of.
	f.ApplyOn(leader, harness.WebSpec("hello:v2", 2, "    batchSize: 2\n    minHealthyTime: 3s\n"))
	var before api.Rollout
	testenv.Eventually(t, 60*time.Second, "the rollout to round 2 to finish its first batch", func() error {
		var err error
		if before, err = f.Client.GetRollout(ctx, api.DefaultProject, "web"); err != nil {
			return err
		}
		if before.State.Final() {
			t.Fatalf("the rollout ended (%s) before the kill; want it under way", before.State)
		}
		if before.Updated < 2 || before.Batch < 2 {
			return fmt.Errorf("batch %d/%d, %d updated", before.Batch, before.Batches, before.Updated)
		}
		return nil
	})
	// The nodes already on round 2 before the kill (by ID: a replica that
	// does not lead leaves instances' node names out), with their containers.
	updated := map[string]string{}
	for _, i := range f.Instances("web") {
		if i.Revision == before.To && i.State == api.InstanceHealthy {
			updated[i.NodeID] = i.ContainerID
		}
	}
	if len(updated) < 2 {
		t.Fatalf("%d nodes healthy on round 2 after the first batch; want 2", len(updated))
	}
	t.Logf("kill -9 of leader %s at rollout %s batch %d/%d, %d updated (%v on round 2)",
		leader.Name, before.ID, before.Batch, before.Batches, before.Updated, updated)
	killed := time.Now()
	leader.Proc.Kill()
	killedLog := leader.Proc.Out.String()

	next := f.WaitLeader(newLeaderWithin + 5*time.Second)
	_, times := harness.LogLines(next.Proc.Out.String(), "leading", killed)
	if len(times) == 0 {
		t.Fatalf("%s leads but logged no leading since the kill", next.Name)
	}
	took := times[0].Sub(killed)
	t.Logf("%s leads %v after the kill", next.Name, took.Round(time.Millisecond))
	if took > newLeaderWithin {
		t.Errorf("a new leader %v after the leader's kill -9; want within %v", took.Round(time.Millisecond), newLeaderWithin)
	}

	ro := f.WaitRollout("web", 90*time.Second)
	if ro.State != api.RolloutSucceeded || ro.ID != before.ID || ro.To != before.To {
		t.Fatalf("rollout after the kill: %s to revision %d: %s (%s); want %s to revision %d succeeded",
			ro.ID, ro.To, ro.State, ro.Message, before.ID, before.To)
	}
	waitRound(t, f, nodes, "hello:v2", 2, 30*time.Second)
	for _, i := range f.WaitHealthy("web", len(nodes), 30*time.Second) {
		if i.Revision != before.To {
			t.Errorf("instance on node %s is on revision %d; want %d, the one applied", i.NodeID, i.Revision, before.To)
		}
		if id, ok := updated[i.NodeID]; ok && id != i.ContainerID {
			t.Errorf("node %s was on round 2 before the kill in container %s, now in %s; want it kept: the rollout resumes, not restarts", i.NodeID, id, i.ContainerID)
		}
	}
	checkReady(t, f, nodes)
	checkNeverUnreachable(t, f, killedLog)
}

// TestReplicasNonLeaderKilled kills with SIGKILL the replica that is not
// the leader and holds the most agents: each of its agents connects to
// another replica within 30 s, and no container anywhere is restarted or
// replaced.
func TestReplicasNonLeaderKilled(t *testing.T) {
	f, nodes := replicaFleet(t)
	leader := f.WaitLeader(10 * time.Second)
	held := map[*harness.Replica][]string{}
	for _, n := range nodes {
		addr, _ := f.AgentServer(n)
		held[f.ReplicaAt(addr)] = append(held[f.ReplicaAt(addr)], n)
	}
	var victim *harness.Replica
	for _, r := range f.Replicas {
		if r != leader && (victim == nil || len(held[r]) > len(held[victim])) {
			victim = r
		}
	}
	if len(held[victim]) == 0 {
		t.Fatalf("no agent connected to a replica other than the leader %s: %v", leader.Name, held)
	}
	f.Use(leader)
	started := allStarts(t, f, nodes)
	w := watch(t, f)

	t.Logf("kill -9 of %s (leader %s), which holds %v", victim.Name, leader.Name, held[victim])
	killed := time.Now()
	victim.Proc.Kill()
	for _, n := range held[victim] {
		var at time.Time
		testenv.Eventually(t, reconnectWithin+5*time.Second, n+" to connect to another replica", func() error {
			var addr string
			addr, at = f.AgentServer(n)
			if at.Before(killed) || addr == victim.AgentAddr {
				return fmt.Errorf("last connected to %s at %s", addr, at.Format(time.StampMilli))
			}
			return nil
		})
		addr, _ := f.AgentServer(n)
		took := at.Sub(killed)
		t.Logf("%s connected to %s %v after the kill", n, f.ReplicaAt(addr).Name, took.Round(time.Millisecond))
		if took > reconnectWithin {
			t.Errorf("%s connected to another replica %v after the kill; want within %v", n, took.Round(time.Millisecond), reconnectWithin)
		}
	}
	for _, n := range nodes {
		f.WaitNodeState(n, api.NodeReady, 30*time.Second)
	}
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	for _, n := range held[victim] {
		f.WaitReconciled(n, 30*time.Second)
	}
	w.check(t)
	if now := allStarts(t, f, nodes); !sameStarts(started, now) {
		t.Errorf("containers (node/ID → started) went from %v to %v; want the same ones, never restarted", started, now)
	}
	checkUnreachable(t, f, killed)
}

// checkUnreachable fails the test with the lines of the replicas' logs (and
// of logs, those of their earlier runs) that marked a node unreachable
// since since.
func checkUnreachable(t *testing.T, f *harness.Fleet, since time.Time, logs ...string) {
	t.Helper()
	for _, r := range f.Replicas {
		logs = append(logs, r.Proc.Out.String())
	}
	var all []string
	for _, out := range logs {
		lines, _ := harness.LogLines(out, "node unreachable", since)
		all = append(all, lines...)
	}
	if len(all) > 0 {
		t.Errorf("%d node unreachable lines in the replicas' logs; want none:\n%s", len(all), strings.Join(all, "\n"))
	}
}

// TestReplicasRollingRestart stops each of three replicas in turn with
// SIGTERM and starts it again with the same flags, waiting for it to answer
// and for its agents to have moved before the next: no container is
// restarted or replaced, no node is marked unreachable, every node is ready
// at the end, and a change after the restart still reaches every agent.
func TestReplicasRollingRestart(t *testing.T) {
	f, nodes := replicaFleet(t)
	started := allStarts(t, f, nodes)
	w := watch(t, f)
	var logs []string
	// The replicas that do not lead first, the leader last: both kinds of
	// stop are covered, whichever replica leads.
	leader := f.WaitLeader(10 * time.Second)
	order := []*harness.Replica{}
	for _, r := range f.Replicas {
		if r != leader {
			order = append(order, r)
		}
	}
	order = append(order, leader)
	for _, r := range order {
		t.Logf("stopping %s (leader: %v)", r.Name, r.Leading())
		var moving []string
		for _, n := range nodes {
			if addr, _ := f.AgentServer(n); addr == r.AgentAddr {
				moving = append(moving, n)
			}
		}
		f.Use(other(t, f, r))
		stopped := time.Now()
		// It drains its agents within --drain-agents-within (10 s) first.
		r.Proc.StopWithin(20 * time.Second)
		if done, err := r.Proc.Exited(0); !done || err != nil {
			t.Fatalf("%s after SIGTERM: exited %v, %v; want a clean exit", r.Name, done, err)
		}
		logs = append(logs, r.Proc.Out.String())
		t.Logf("%s stopped in %v; its agents %v", r.Name, time.Since(stopped).Round(time.Millisecond), moving)
		f.StartReplica(r)
		for _, l := range []string{"draining agents: telling them to move to another server", "agents drained"} {
			lines, _ := harness.LogLines(logs[len(logs)-1], l, time.Time{})
			t.Logf("%s: %s", r.Name, strings.Join(lines, "; "))
		}
		for _, n := range moving {
			testenv.Eventually(t, reconnectWithin, n+" to connect to another replica", func() error {
				if addr, at := f.AgentServer(n); at.Before(stopped) {
					return fmt.Errorf("last connected to %s at %s", addr, at.Format(time.StampMilli))
				}
				return nil
			})
			addr, at := f.AgentServer(n)
			t.Logf("%s connected to %s %v after the SIGTERM", n, f.ReplicaAt(addr).Name, at.Sub(stopped).Round(time.Millisecond))
		}
		for _, n := range nodes {
			f.WaitNodeState(n, api.NodeReady, 30*time.Second)
		}
		t.Logf("%s restarted and its agents back %v after its stop", r.Name, time.Since(stopped).Round(time.Millisecond))
	}
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	for _, n := range nodes {
		f.WaitReconciled(n, 30*time.Second)
	}
	w.check(t)
	if now := allStarts(t, f, nodes); !sameStarts(started, now) {
		t.Errorf("containers (node/ID → started) went from %v to %v; want the same ones, never restarted", started, now)
	}
	checkReady(t, f, nodes)
	// A replica stopped with SIGTERM tells its agents to go; each keeps its
	// stream, and its heartbeats, until its moment to move, so none is
	// silent long enough to be marked unreachable.
	checkUnreachable(t, f, time.Time{}, logs...)

	f.ApplyOn(f.Replicas[1], harness.WebSpec("hello:v2", 2, "    batchSize: 100%\n    minHealthyTime: 0s\n"))
	waitRound(t, f, nodes, "hello:v2", 2, 60*time.Second)
	if ro := f.WaitRollout("web", 30*time.Second); ro.State != api.RolloutSucceeded {
		t.Fatalf("rollout after the restarts: %s (%s); want succeeded", ro.State, ro.Message)
	}
}
