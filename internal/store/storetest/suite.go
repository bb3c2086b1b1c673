// Package storetest is the conformance suite every store backend passes, so
// SQLite and PostgreSQL cannot drift apart.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// Run runs the suite; open returns a new, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"APITokens", testAPITokens},
		{"UsersAndTokens", testUsersAndTokens},
		{"RolesBindingsProjects", testRolesBindingsProjects},
		{"AuditChain", testAuditChain},
		{"LateStatus", testLateStatus},
		{"EnrollTokens", testEnrollTokens},
		{"EnrollUseLimitUnderConcurrency", testEnrollConcurrent},
		{"EnrollRetried", testEnrollRetried},
		{"Nodes", testNodes},
		{"ReEnroll", testReEnroll},
		{"RevokeAndDeleteNodes", testRevokeAndDeleteNodes},
		{"NodeScheduling", testNodeScheduling},
		{"Deployments", testDeployments},
		{"Instances", testInstances},
		{"RevisionsAndRollouts", testRevisionsAndRollouts},
		{"BulkPlacementAndStep", testBulkPlacementAndStep},
		{"Events", testEvents},
		{"PruneRevisions", testPruneRevisions},
		{"PruneEvents", testPruneEvents},
		{"OptimisticUpdatesRace", testOptimisticRace},
		{"EnrollOneUseRace", testEnrollOneUse},
		{"PinRevisionDigestRace", testPinRace},
		{"ApplyRevisionRace", testApplyRace},
		{"EventsVisibleInOrder", testEventsInOrder},
		{"NodeBatchesRace", testNodeBatchesRace},
		{"Leases", testLeases},
		{"LeaseExpires", testLeaseExpires},
		{"LeaseOneHolderUnderConcurrency", testLeaseOneHolderUnderConcurrency},
		{"FencedWrites", testFencedWrites},
		{"Replicas", testReplicas},
		{"Sessions", testSessions},
		{"DesiredStates", testDesiredStates},
		{"DesiredStatesInOrder", testDesiredStatesInOrder},
		{"Reports", testReports},
		{"Sealed", testSealed}, {"SealedRace", testSealedRace}, {"SealedReplace", testSealedReplace},
		{"NodeCerts", testNodeCerts},
		{"StateSeq", testStateSeq},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, open(t)) })
	}
}

var ctx = context.Background()

func testAPITokens(t *testing.T, s store.Store) {
	if err := s.CreateAPIToken(ctx, api.APIToken{ID: "a1", Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "hash1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAPIToken(ctx, api.APIToken{ID: "a1", Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "hash2"); !errors.Is(err, store.ErrExists) {
		t.Errorf("second create: got %v; want ErrExists", err)
	}
	_, h, err := s.GetAPIToken(ctx, "a1")
	if err != nil || h != "hash1" {
		t.Errorf("APITokenHash = %q, %v; want hash1", h, err)
	}
	if _, _, err := s.GetAPIToken(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown token: got %v; want ErrNotFound", err)
	}
}

func newNode(id, name string) api.Node {
	return api.Node{ID: id, Name: name, Labels: map[string]string{"role": "web"}, State: api.NodeReady,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
}

func testEnrollTokens(t *testing.T, s store.Store) {
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	tok := api.EnrollToken{ID: "t1", Labels: map[string]string{"zone": "a"}, ExpiresAt: exp, MaxUses: 2, CreatedAt: time.Now()}
	if err := s.CreateEnrollToken(ctx, tok, "secret-hash"); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListEnrollTokens(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListEnrollTokens = %v, %v; want one", list, err)
	}
	if got := list[0]; !got.ExpiresAt.Equal(exp) || got.MaxUses != 2 || got.Labels["zone"] != "a" || got.Token != "" {
		t.Errorf("listed token = %+v; want expiry %v, 2 uses, zone=a, no secret", got, exp)
	}

	var seenHash string
	check := func(t api.EnrollToken, hash string, _ *api.Node) error {
		seenHash = hash
		if t.MaxUses > 0 && t.Uses >= t.MaxUses {
			return errors.New("used up")
		}
		return nil
	}
	n, err := s.Enroll(ctx, "t1", check, newNode("n1", "one"))
	if err != nil {
		t.Fatal(err)
	}
	if seenHash != "secret-hash" || n.Version != 1 {
		t.Errorf("Enroll: check saw hash %q, node version %d; want secret-hash, 1", seenHash, n.Version)
	}
	if _, err := s.Enroll(ctx, "t1", check, newNode("n2", "one")); !errors.Is(err, store.ErrExists) {
		t.Errorf("enrolling a second node named one: got %v; want ErrExists", err)
	}
	if _, err := s.Enroll(ctx, "t1", check, newNode("n2", "two")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, "t1", check, newNode("n3", "three")); err == nil || err.Error() != "used up" {
		t.Errorf("third enrollment on a 2-use token: got %v; want the check's error", err)
	}
	if _, err := s.GetNode(ctx, "n3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused enrollment left node n3: %v", err)
	}
	if _, err := s.Enroll(ctx, "nope", check, newNode("n4", "four")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown token: got %v; want ErrNotFound", err)
	}
	if err := s.RevokeEnrollToken(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	list, _ = s.ListEnrollTokens(ctx)
	if !list[0].Revoked || list[0].Uses != 2 {
		t.Errorf("after revoke: %+v; want revoked with 2 uses", list[0])
	}
	if err := s.RevokeEnrollToken(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoking unknown token: got %v; want ErrNotFound", err)
	}
}

// A token bound to a node re-enrolls it: same ID, labels and instances, a
// new epoch, and no second node.
func testReEnroll(t *testing.T, s store.Store) {
	for _, tok := range []api.EnrollToken{
		{ID: "t", AgentLabels: []string{"zone"}, CreatedAt: time.Now()},
		{ID: "re", Node: "alpha", MaxUses: 1, CreatedAt: time.Now()},
	} {
		if err := s.CreateEnrollToken(ctx, tok, "h"); err != nil {
			t.Fatal(err)
		}
	}
	toks, err := s.ListEnrollTokens(ctx)
	if err != nil || len(toks) != 2 || toks[0].AgentLabels[0] != "zone" || toks[1].Node != "alpha" || toks[1].AgentLabels != nil {
		t.Fatalf("ListEnrollTokens = %+v, %v; want t with agent labels [zone], re for node alpha", toks, err)
	}
	var seen *api.Node
	check := func(_ api.EnrollToken, _ string, existing *api.Node) error {
		seen = existing
		return nil
	}
	a, err := s.Enroll(ctx, "t", check, newNode("a", "alpha"))
	if err != nil || seen != nil {
		t.Fatalf("Enroll = %v, check saw %+v; want a new node, no existing one", err, seen)
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{{ID: "i1", Project: "p", Deployment: "d", NodeID: "a", Version: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	again := newNode("other-id", "alpha")
	again.Facts = api.Facts{Hostname: "rebuilt"}
	again.Labels = map[string]string{"role": "db"}
	n, err := s.Enroll(ctx, "re", check, again)
	if err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.ID != "a" {
		t.Errorf("check saw existing node %+v; want a", seen)
	}
	if n.ID != "a" || n.Epoch != a.Epoch+1 || n.Labels["role"] != "web" || n.Version != a.Version+1 {
		t.Errorf("re-enrolled node = %+v; want ID a, epoch %d, role=web kept, version %d", n, a.Epoch+1, a.Version+1)
	}
	got, err := s.GetNode(ctx, "a")
	if err != nil || got.Epoch != n.Epoch || got.Facts.Hostname != "rebuilt" {
		t.Errorf("GetNode(a) = %+v, %v; want epoch %d, new facts", got, err, n.Epoch)
	}
	if nodes, _ := s.ListNodes(ctx); len(nodes) != 1 {
		t.Errorf("nodes after re-enrollment = %+v; want one", nodes)
	}
	if ins, _ := s.ListInstances(ctx, store.InstanceFilter{NodeID: "a"}); len(ins) != 1 {
		t.Errorf("instances of a after re-enrollment = %+v; want i1 kept", ins)
	}
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "gone", Node: "nobody", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, "gone", check, newNode("x", "nobody")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("re-enrolling a node that does not exist: got %v; want ErrNotFound", err)
	}
	if _, err := s.GetNode(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed re-enrollment created node x: %v", err)
	}
}

func testRevokeAndDeleteNodes(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	for _, n := range []api.Node{newNode("a", "alpha"), newNode("b", "beta")} {
		if _, err := s.Enroll(ctx, "t", pass, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{
		{ID: "ia", Project: "p", Deployment: "d", NodeID: "a", Version: 1},
		{ID: "ib", Project: "p", Deployment: "d", NodeID: "b", Version: 1},
	}, nil); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	n, err := s.RevokeNode(ctx, "a", "revoked", at)
	if err != nil || n.State != api.NodeRevoked {
		t.Fatalf("RevokeNode(a) = %+v, %v; want state revoked", n, err)
	}
	if n2, err := s.RevokeNode(ctx, "a", "again", at.Add(time.Hour)); err != nil || n2.Version != n.Version {
		t.Errorf("revoking again = %+v, %v; want no change (version %d)", n2, err, n.Version)
	}
	if got, _ := s.GetNode(ctx, "a"); got.State != api.NodeRevoked {
		t.Errorf("stored state of a = %s; want revoked", got.State)
	}
	if err := s.UpdateNodeStatuses(ctx, []store.NodeStatus{{ID: "a", State: api.NodeReady, LastSeen: at}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "a"); got.State != api.NodeRevoked {
		t.Errorf("state of a after a status write = %s; want revoked still", got.State)
	}
	if _, err := s.RevokeNode(ctx, "zz", "x", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoking an unknown node: got %v; want ErrNotFound", err)
	}
	if err := s.DeleteNode(ctx, "b", "removed", at); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetNode(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetNode(b) after delete: %v; want ErrNotFound", err)
	}
	if ins, _ := s.ListInstances(ctx, store.InstanceFilter{}); len(ins) != 1 || ins[0].ID != "ia" {
		t.Errorf("instances after deleting b = %+v; want ia only", ins)
	}
	if err := s.DeleteNode(ctx, "b", "removed", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting b again: got %v; want ErrNotFound", err)
	}
	// The name of a deleted node is free again; its ID stays refused.
	if _, err := s.Enroll(ctx, "t", pass, newNode("b2", "beta")); err != nil {
		t.Errorf("enrolling a new node named beta: %v", err)
	}
	revoked, err := s.ListRevokedNodes(ctx)
	want := []store.RevokedNode{{ID: "a", Name: "alpha", Reason: "revoked", At: at}, {ID: "b", Name: "beta", Reason: "removed", At: at}}
	if err != nil || fmt.Sprint(revoked) != fmt.Sprint(want) {
		t.Errorf("ListRevokedNodes = %v, %v; want %v", revoked, err, want)
	}
}

func testNodeScheduling(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	if _, err := s.Enroll(ctx, "t", pass, newNode("a", "alpha")); err != nil {
		t.Fatal(err)
	}
	n, err := s.SetNodeScheduling(ctx, "a", nil, api.NodeDraining)
	if err != nil || n.Scheduling != api.NodeDraining {
		t.Fatalf("SetNodeScheduling(a, draining) = %+v, %v; want draining", n, err)
	}
	// A label edit, which writes the whole node, keeps it.
	n.Labels = map[string]string{"x": "y"}
	if _, err := s.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "a"); got.Scheduling != api.NodeDraining {
		t.Errorf("scheduling after a label edit = %q; want draining", got.Scheduling)
	}
	// Only from draining to drained: an uncordon that came first wins.
	if _, err := s.SetNodeScheduling(ctx, "a", nil, ""); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SetNodeScheduling(ctx, "a", []api.NodeScheduling{api.NodeDraining}, api.NodeDrained); err != nil || n.Scheduling != "" {
		t.Errorf("drained after an uncordon = %+v, %v; want scheduling empty", n, err)
	}
	if nodes, _ := s.ListNodes(ctx); len(nodes) != 1 || nodes[0].Scheduling != "" {
		t.Errorf("ListNodes = %+v; want alpha taking work", nodes)
	}
	if _, err := s.SetNodeScheduling(ctx, "zz", nil, api.NodeCordoned); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cordoning an unknown node: got %v; want ErrNotFound", err)
	}
}

func testEnrollConcurrent(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", MaxUses: 5, CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	check := func(t api.EnrollToken, _ string, _ *api.Node) error {
		if t.Uses >= t.MaxUses {
			return errors.New("used up")
		}
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Enroll(ctx, "t", check, newNode(fmt.Sprint("n", i), fmt.Sprint("node", i))); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 5 {
		t.Errorf("%d of 20 concurrent enrollments succeeded on a 5-use token; want 5", ok)
	}
}

func testNodes(t *testing.T, s store.Store) {
	tok := api.EnrollToken{ID: "t", CreatedAt: time.Now()}
	if err := s.CreateEnrollToken(ctx, tok, "h"); err != nil {
		t.Fatal(err)
	}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	a, err := s.Enroll(ctx, "t", pass, newNode("a", "alpha"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, "t", pass, newNode("b", "beta")); err != nil {
		t.Fatal(err)
	}
	a.Labels = map[string]string{"role": "db"}
	a.Facts = api.Facts{DockerVersion: "20.10", CPUs: 2}
	a2, err := s.UpdateNode(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if a2.Version != a.Version+1 {
		t.Errorf("version after update = %d; want %d", a2.Version, a.Version+1)
	}
	if _, err := s.UpdateNode(ctx, a); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update with a stale version: got %v; want ErrConflict", err)
	}
	if _, err := s.UpdateNode(ctx, api.Node{ID: "zz", Version: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update of unknown node: got %v; want ErrNotFound", err)
	}
	got, err := s.GetNode(ctx, "a")
	if err != nil || got.Labels["role"] != "db" || got.Facts.DockerVersion != "20.10" || got.Facts.CPUs != 2 {
		t.Errorf("GetNode = %+v, %v; want role=db and facts stored", got, err)
	}
	seen := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.SetSeen(ctx, map[string]store.Seen{"a": {At: seen}, "gone": {At: seen}}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetNode(ctx, "a")
	if !got.LastSeen.Equal(seen) || got.Version != a2.Version {
		t.Errorf("after SetSeen: last seen %v version %d; want %v and version unchanged %d", got.LastSeen, got.Version, seen, a2.Version)
	}
	// The usage of a node, written with an older time (the replica that
	// holds its stream flushed after the leader): the usage is taken, the
	// time kept.
	usage := api.Usage{CPUPercent: 12.5, MemoryBytes: 1 << 30, Containers: 3}
	if err := s.SetSeen(ctx, map[string]store.Seen{"a": {At: seen.Add(-time.Second), Usage: &usage}}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetNode(ctx, "a")
	if !got.LastSeen.Equal(seen) || got.Usage != usage || got.Version != a2.Version {
		t.Errorf("after SetSeen with usage and an older time: last seen %v, usage %+v, version %d; want %v, %+v, %d",
			got.LastSeen, got.Usage, got.Version, seen, usage, a2.Version)
	}
	// A time alone leaves the usage.
	if err := s.SetSeen(ctx, map[string]store.Seen{"a": {At: seen.Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.GetNode(ctx, "a"); !got.LastSeen.Equal(seen.Add(time.Second)) || got.Usage != usage {
		t.Errorf("after SetSeen with a time alone: last seen %v, usage %+v; want %v, %+v", got.LastSeen, got.Usage, seen.Add(time.Second), usage)
	}
	seen = seen.Add(time.Second)
	err = s.UpdateNodeStatuses(ctx, []store.NodeStatus{
		{ID: "a", State: api.NodeUnreachable, Error: "docker: connection refused", LastSeen: seen.Add(-time.Minute)},
		{ID: "b", State: api.NodeReady, Facts: &api.Facts{DockerVersion: "24.0", CPUs: 8}, LastSeen: seen},
		{ID: "gone", State: api.NodeReady},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetNode(ctx, "a")
	if got.State != api.NodeUnreachable || got.Error != "docker: connection refused" || got.Facts.DockerVersion != "20.10" ||
		got.Labels["role"] != "db" || !got.LastSeen.Equal(seen) || got.Version != a2.Version+1 {
		t.Errorf("after UpdateNodeStatuses: %+v; want unreachable with the error, facts, labels and (later) last seen kept, version %d", got, a2.Version+1)
	}
	if b, _ := s.GetNode(ctx, "b"); b.State != api.NodeReady || b.Facts.DockerVersion != "24.0" || b.Facts.CPUs != 8 || !b.LastSeen.Equal(seen) {
		t.Errorf("after UpdateNodeStatuses: %+v; want ready with the new facts, last seen %v", b, seen)
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].Name != "alpha" || nodes[1].Name != "beta" {
		t.Errorf("ListNodes = %v, %v; want alpha, beta", nodes, err)
	}
}

func newDeployment(project, name string) api.Deployment {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return api.Deployment{Project: project, Name: name, Revision: 1, CreatedAt: now, UpdatedAt: now,
		Spec: spec.Deployment{APIVersion: spec.APIVersion, Kind: spec.KindDeployment,
			Metadata: spec.Metadata{Name: name, Project: project},
			Spec: spec.DeploymentSpec{Mode: spec.ModeReplicated, Replicas: 3,
				Container: spec.Container{Image: "hello:v1", Env: map[string]string{"A": "b"}, Resources: spec.Resources{Memory: 64 << 20}}}}}
}

func testDeployments(t *testing.T, s store.Store) {
	d, err := s.PutDeployment(ctx, newDeployment("default", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutDeployment(ctx, newDeployment("default", "web")); !errors.Is(err, store.ErrExists) {
		t.Errorf("second create: got %v; want ErrExists", err)
	}
	if _, err := s.PutDeployment(ctx, newDeployment("other", "web")); err != nil {
		t.Errorf("same name in another project: %v", err)
	}
	d.Revision = 2
	d.Spec.Spec.Replicas = 5
	d2, err := s.PutDeployment(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutDeployment(ctx, d); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update with stale version: got %v; want ErrConflict", err)
	}
	got, err := s.GetDeployment(ctx, "default", "web")
	if err != nil || got.Revision != 2 || got.Spec.Spec.Replicas != 5 || got.Version != d2.Version ||
		got.Spec.Spec.Container.Resources.Memory != 64<<20 || got.Spec.Spec.Container.Env["A"] != "b" {
		t.Errorf("GetDeployment = %+v, %v; want revision 2, 5 replicas, spec intact", got, err)
	}
	if list, _ := s.ListDeployments(ctx, "default"); len(list) != 1 {
		t.Errorf("ListDeployments(default) = %d; want 1", len(list))
	}
	if list, _ := s.ListDeployments(ctx, ""); len(list) != 2 {
		t.Errorf("ListDeployments(all) = %d; want 2", len(list))
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{{ID: "i1", Project: "default", Deployment: "web", NodeID: "n", State: api.InstancePending}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDeployment(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetDeployment(ctx, "default", "web"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after delete: got %v; want ErrNotFound", err)
	}
	if is, _ := s.ListInstances(ctx, store.InstanceFilter{Deployment: "web", Project: "default"}); len(is) != 0 {
		t.Errorf("delete left %d instances", len(is))
	}
	if err := s.DeleteDeployment(ctx, "default", "web"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: got %v; want ErrNotFound", err)
	}
}

func testInstances(t *testing.T, s store.Store) {
	mk := func(id, dep, node string) api.Instance {
		return api.Instance{ID: id, Project: "default", Deployment: dep, NodeID: node, Revision: 1, SpecHash: "h", State: api.InstancePending, CreatedAt: time.Now()}
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{mk("i1", "web", "a"), mk("i2", "web", "b"), mk("i3", "db", "a")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{mk("i1", "web", "c")}, nil); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate instance ID: got %v; want ErrExists", err)
	}
	if is, _ := s.ListInstances(ctx, store.InstanceFilter{NodeID: "a"}); len(is) != 2 {
		t.Errorf("instances on node a = %d; want 2", len(is))
	}
	if is, _ := s.ListInstances(ctx, store.InstanceFilter{Project: "default", Deployment: "web"}); len(is) != 2 {
		t.Errorf("instances of web = %d; want 2", len(is))
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "i1", NodeID: "a", State: api.InstanceFailed, Reason: "exit 1", ContainerID: "c1", ImageDigest: "hello@sha256:abc", Restarts: 3, At: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "nope", NodeID: "a", State: api.InstanceRunning}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("status of unknown instance: got %v; want ErrNotFound", err)
	}
	if err := s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "i2", NodeID: "a", State: api.InstanceRunning}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("status of another node's instance: got %v; want ErrNotFound", err)
	}
	if err := s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "i3", NodeID: "a", SpecHash: "old", State: api.InstanceRunning}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("status for a spec the instance no longer has: got %v; want ErrNotFound", err)
	}
	batch := []store.InstanceStatus{
		{ID: "i2", NodeID: "b", State: api.InstanceHealthy, At: at},
		{ID: "i3", NodeID: "z", State: api.InstanceHealthy, At: at}, // not i3's node
		{ID: "i3", NodeID: "a", State: api.InstanceRunning, At: at},
	}
	if ok, err := s.UpdateInstanceStatuses(ctx, batch); err != nil || !ok[0] || ok[1] || !ok[2] {
		t.Errorf("UpdateInstanceStatuses = %v, %v; want [true false true]", ok, err)
	}
	if err := s.SetInstanceRevision(ctx, []string{"i3"}, 2, "h2"); err != nil {
		t.Fatal(err)
	}
	if is, _ := s.ListInstances(ctx, store.InstanceFilter{Deployment: "db"}); len(is) != 1 || is[0].Revision != 2 || is[0].SpecHash != "h2" || is[0].State != api.InstancePending {
		t.Errorf("after SetInstanceRevision: %+v; want revision 2, hash h2, pending", is)
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{mk("i4", "web", "c")}, []string{"i2"}); err != nil {
		t.Fatal(err)
	}
	is, _ := s.ListInstances(ctx, store.InstanceFilter{Deployment: "web"})
	got := map[string]api.Instance{}
	for _, i := range is {
		got[i.ID] = i
	}
	if len(got) != 2 || got["i1"].State != api.InstanceFailed || got["i1"].Reason != "exit 1" || got["i1"].ContainerID != "c1" || got["i1"].ImageDigest != "hello@sha256:abc" ||
		got["i1"].Restarts != 3 || !got["i1"].UpdatedAt.Equal(at) || got["i4"].NodeID != "c" {
		t.Errorf("instances of web after status and placement = %+v; want i1 failed (exit 1, c1, 3 restarts) and i4 on c", got)
	}
}

func testRevisionsAndRollouts(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := newDeployment("default", "web")
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: d.Spec, Cause: "apply", CreatedAt: now}
	ro1 := api.Rollout{ID: "r1", Project: "default", Deployment: "web", From: 0, To: 1, State: api.RolloutRunning, CreatedAt: now}
	d, err := s.ApplyRevision(ctx, d, rev, ro1, []api.Event{{Time: now, Project: "default", Deployment: "web", Rollout: "r1", Type: "rollout.started"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyRevision(ctx, newDeployment("default", "web"), rev, ro1, nil); !errors.Is(err, store.ErrExists) {
		t.Errorf("applying over an existing deployment with version 0: got %v; want ErrExists", err)
	}
	got, err := s.LatestRollout(ctx, "default", "web")
	if err != nil || got.ID != "r1" || got.Version != 1 || got.To != 1 {
		t.Fatalf("LatestRollout = %+v, %v; want r1 version 1", got, err)
	}

	// A second apply supersedes the running rollout.
	d.Revision = 2
	rev2 := rev
	rev2.Number, rev2.Cause = 2, "apply"
	ro2 := api.Rollout{ID: "r2", Project: "default", Deployment: "web", From: 0, To: 2, State: api.RolloutRunning, CreatedAt: now.Add(time.Second)}
	if _, err := s.ApplyRevision(ctx, d, rev2, ro2, nil); err != nil {
		t.Fatal(err)
	}
	active, err := s.ActiveRollouts(ctx)
	if err != nil || len(active) != 1 || active[0].ID != "r2" {
		t.Fatalf("ActiveRollouts = %+v, %v; want only r2", active, err)
	}
	evs, _ := s.ListEvents(ctx, store.EventFilter{Deployment: "web"})
	if len(evs) != 2 || evs[1].Type != "rollout.superseded" || evs[1].Rollout != "r1" {
		t.Errorf("events = %+v; want rollout.started then r1's rollout.superseded", evs)
	}
	revs, err := s.ListRevisions(ctx, "default", "web")
	if err != nil || len(revs) != 2 || revs[0].Number != 1 || revs[1].Number != 2 || revs[0].Spec.Metadata.Name != "web" {
		t.Errorf("ListRevisions = %+v, %v; want 1 and 2 with their specs", revs, err)
	}
	if _, err := s.GetRevision(ctx, "default", "web", 9); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRevision(9): got %v; want ErrNotFound", err)
	}

	// The first digest pinned holds, with the node that pinned it.
	for _, try := range []struct{ digest, node, name string }{{"hello@sha256:aaa", "n1", "edge-1"}, {"hello@sha256:bbb", "n2", "edge-2"}} {
		rev, err := s.PinRevisionDigest(ctx, "default", "web", 2, try.digest, try.node, try.name)
		if err != nil || rev.ImageDigest != "hello@sha256:aaa" || rev.PinnedBy != "n1" || rev.PinnedByName != "edge-1" || rev.Number != 2 {
			t.Errorf("PinRevisionDigest(%s) = %+v, %v; want the first, hello@sha256:aaa by n1 (edge-1)", try.digest, rev, err)
		}
	}
	if rev, err := s.GetRevision(ctx, "default", "web", 2); err != nil || rev.ImageDigest != "hello@sha256:aaa" || rev.PinnedBy != "n1" || rev.PinnedByName != "edge-1" {
		t.Errorf("GetRevision(2) = %+v, %v; want the pin by n1 (edge-1)", rev, err)
	}
	if _, err := s.PinRevisionDigest(ctx, "default", "web", 9, "hello@sha256:ccc", "n1", "edge-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PinRevisionDigest(9): got %v; want ErrNotFound", err)
	}

	// A step moves instances, bumps the stable revision and records events, at once.
	if err := s.ApplyPlacement(ctx, []api.Instance{{ID: "i1", Project: "default", Deployment: "web", NodeID: "n", State: api.InstanceHealthy}}, nil); err != nil {
		t.Fatal(err)
	}
	r := active[0]
	r.State, r.Batch = api.RolloutSucceeded, 1
	stable := int64(2)
	r, err = s.StepRollout(ctx, r, []store.InstanceMove{{ID: "i1", Revision: 2, SpecHash: "h2"}}, &stable,
		[]api.Event{{Time: now, Project: "default", Deployment: "web", Rollout: "r2", Type: "rollout.succeeded"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StepRollout(ctx, active[0], nil, nil, nil); !errors.Is(err, store.ErrConflict) {
		t.Errorf("step with a stale version: got %v; want ErrConflict", err)
	}
	is, _ := s.ListInstances(ctx, store.InstanceFilter{Deployment: "web"})
	dep, _ := s.GetDeployment(ctx, "default", "web")
	if len(is) != 1 || is[0].Revision != 2 || is[0].SpecHash != "h2" || is[0].State != api.InstancePending || dep.StableRevision != 2 {
		t.Errorf("after the step: instances %+v, stable %d; want i1 pending at revision 2, stable 2", is, dep.StableRevision)
	}
	if active, _ := s.ActiveRollouts(ctx); len(active) != 0 {
		t.Errorf("%d active rollouts after success; want 0", len(active))
	}
	if err := s.DeleteDeployment(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if revs, _ := s.ListRevisions(ctx, "default", "web"); len(revs) != 0 {
		t.Errorf("delete left %d revisions", len(revs))
	}
	if _, err := s.LatestRollout(ctx, "default", "web"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete left rollouts: %v", err)
	}
}

func testEvents(t *testing.T, s store.Store) {
	var evs []api.Event
	for i := range 5 {
		dep := "a"
		if i%2 == 1 {
			dep = "b"
		}
		evs = append(evs, api.Event{Time: time.Now(), Project: "default", Deployment: dep, Type: "t", Message: fmt.Sprint(i)})
	}
	if err := s.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil || len(all) != 5 {
		t.Fatalf("ListEvents = %d, %v; want 5", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq || all[i].Message != fmt.Sprint(i) {
			t.Errorf("events out of order: %+v", all)
		}
	}
	b, _ := s.ListEvents(ctx, store.EventFilter{Deployment: "b"})
	if len(b) != 2 {
		t.Errorf("events of b = %d; want 2", len(b))
	}
	after, _ := s.ListEvents(ctx, store.EventFilter{After: all[2].Seq, Limit: 1})
	if len(after) != 1 || after[0].Seq != all[3].Seq {
		t.Errorf("after %d limit 1 = %+v; want event %d", all[2].Seq, after, all[3].Seq)
	}
}

// testPruneRevisions makes revisions 1 to 10 of a deployment, with 3
// stable, an instance on 2 and a rollout running from 7 to 10, and keeps
// the newest 2: 9 and 10, and 2, 3 and 7 for what still uses them.
func testPruneRevisions(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := newDeployment("default", "web")
	for n := int64(1); n <= 10; n++ {
		d.Revision = n
		rev := api.Revision{Project: "default", Deployment: "web", Number: n, Spec: d.Spec, Cause: "apply", CreatedAt: now}
		ro := api.Rollout{ID: fmt.Sprint("r", n), Project: "default", Deployment: "web", From: 3, To: n, State: api.RolloutRunning, CreatedAt: now}
		if n == 10 {
			ro.From = 7
		}
		var err error
		if d, err = s.ApplyRevision(ctx, d, rev, ro, nil); err != nil {
			t.Fatal(err)
		}
	}
	d.StableRevision = 3
	if _, err := s.PutDeployment(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyPlacement(ctx, []api.Instance{{ID: "i1", Project: "default", Deployment: "web", NodeID: "n", Revision: 2}}, nil); err != nil {
		t.Fatal(err)
	}
	other := newDeployment("default", "api") // one revision: nothing to prune
	if _, err := s.ApplyRevision(ctx, other, api.Revision{Project: "default", Deployment: "api", Number: 1, Spec: other.Spec, CreatedAt: now},
		api.Rollout{ID: "a1", Project: "default", Deployment: "api", To: 1, State: api.RolloutSucceeded, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneRevisions(ctx, 2)
	if err != nil || n != 5 {
		t.Errorf("PruneRevisions(2) = %d, %v; want 5 deleted (1, 4, 5, 6, 8)", n, err)
	}
	revs, _ := s.ListRevisions(ctx, "default", "web")
	var got []int64
	for _, r := range revs {
		got = append(got, r.Number)
	}
	if want := []int64{2, 3, 7, 9, 10}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("revisions after pruning: %v; want %v", got, want)
	}
	if revs, _ := s.ListRevisions(ctx, "default", "api"); len(revs) != 1 {
		t.Errorf("pruning left api %d revisions; want its 1", len(revs))
	}
	if n, err := s.PruneRevisions(ctx, 2); err != nil || n != 0 {
		t.Errorf("PruneRevisions again = %d, %v; want 0", n, err)
	}
}

func testPruneEvents(t *testing.T, s store.Store) {
	now := time.Now()
	var evs []api.Event
	for i := range 10 {
		at := now
		if i < 3 {
			at = now.Add(-48 * time.Hour)
		}
		evs = append(evs, api.Event{Time: at, Project: "default", Deployment: "web", Type: "t", Message: fmt.Sprint(i)})
	}
	if err := s.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	// Older than a day: 0 to 2; beyond the newest 5: 0 to 4.
	n, err := s.PruneEvents(ctx, now.Add(-24*time.Hour), 5)
	if err != nil || n != 5 {
		t.Errorf("PruneEvents = %d, %v; want 5 deleted", n, err)
	}
	left, _ := s.ListEvents(ctx, store.EventFilter{})
	if len(left) != 5 || left[0].Message != "5" {
		t.Errorf("events left: %+v; want 5 to 9", left)
	}
	if n, _ := s.PruneEvents(ctx, now.Add(-24*time.Hour), 100); n != 0 {
		t.Errorf("PruneEvents again deleted %d; want 0", n)
	}
}

// testEnrollRetried: a check that finds the enrollment recorded already
// gets the existing node back, with nothing written and no use counted.
func testEnrollRetried(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t1", MaxUses: 1}, "h"); err != nil {
		t.Fatal(err)
	}
	n := api.Node{ID: "n1", Name: "edge", State: api.NodeReady, KeyID: "k1"}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	if _, err := s.Enroll(ctx, "t1", pass, n); err != nil {
		t.Fatal(err)
	}
	retry := func(_ api.EnrollToken, _ string, existing *api.Node) error {
		if existing == nil || existing.KeyID != "k1" {
			return fmt.Errorf("existing node %+v; want edge with key k1", existing)
		}
		return store.ErrEnrolledAlready
	}
	got, err := s.Enroll(ctx, "t1", retry, api.Node{ID: "n2", Name: "edge", KeyID: "k1"})
	if err != nil || got.ID != "n1" || got.KeyID != "k1" {
		t.Fatalf("retried Enroll = %+v, %v; want node n1", got, err)
	}
	toks, _ := s.ListEnrollTokens(ctx)
	if len(toks) != 1 || toks[0].Uses != 1 {
		t.Errorf("tokens after the retry: %+v; want one use counted", toks)
	}
	if nodes, _ := s.ListNodes(ctx); len(nodes) != 1 {
		t.Errorf("nodes after the retry: %+v; want n1 alone", nodes)
	}
}

// testBulkPlacementAndStep places and moves more instances than one
// statement of the store writes (a 40,000-node fleet's rollout): every
// one lands, each move with its own revision and hash, and removals too.
func testBulkPlacementAndStep(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := newDeployment("default", "web")
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: d.Spec, Cause: "apply", CreatedAt: now}
	if _, err := s.ApplyRevision(ctx, d, rev, api.Rollout{ID: "r1", Project: "default", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	const n = 8100
	add := make([]api.Instance, n)
	for i := range add {
		add[i] = api.Instance{ID: fmt.Sprintf("i%05d", i), Project: "default", Deployment: "web", NodeID: fmt.Sprintf("n%05d", i),
			State: api.InstanceHealthy, Reason: "r", CreatedAt: now, UpdatedAt: now, Version: 1}
	}
	if err := s.ApplyPlacement(ctx, add, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyPlacement(ctx, add[:1], nil); !errors.Is(err, store.ErrExists) {
		t.Errorf("placing an instance whose ID is taken: got %v; want ErrExists", err)
	}
	active, err := s.ActiveRollouts(ctx)
	if err != nil || len(active) != 1 {
		t.Fatalf("ActiveRollouts = %+v, %v; want r1", active, err)
	}
	// All but the last 10 move to revision 1; those 10 to revision 0.
	moves := make([]store.InstanceMove, n)
	for i := range moves {
		moves[i] = store.InstanceMove{ID: add[i].ID, Revision: 1, SpecHash: "h1"}
		if i >= n-10 {
			moves[i].Revision, moves[i].SpecHash = 0, ""
		}
	}
	if _, err := s.StepRollout(ctx, active[0], moves, nil, nil); err != nil {
		t.Fatal(err)
	}
	var remove []string
	for i := 0; i < n; i += 3 {
		remove = append(remove, add[i].ID)
	}
	if err := s.ApplyPlacement(ctx, nil, remove); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListInstances(ctx, store.InstanceFilter{Deployment: "web"})
	if err != nil || len(got) != n-len(remove) {
		t.Fatalf("instances after placing %d and removing %d: %d, %v; want %d", n, len(remove), len(got), err, n-len(remove))
	}
	for _, in := range got {
		var k int
		fmt.Sscanf(in.ID, "i%05d", &k)
		want, hash := int64(1), "h1"
		if k >= n-10 {
			want, hash = 0, ""
		}
		if k%3 == 0 || in.Revision != want || in.SpecHash != hash || in.State != api.InstancePending || in.Reason != "" || in.NodeID != add[k].NodeID {
			t.Fatalf("instance %+v after the step; want it removed if its number is a multiple of 3, else pending at revision %d (%q) on %s",
				in, want, hash, add[k].NodeID)
		}
	}
}
