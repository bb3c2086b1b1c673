package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/audit"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

func testUsersAndTokens(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.CreateUser(ctx, api.User{Name: "alice", CreatedAt: now}, "h1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, api.User{Name: "alice", CreatedAt: now}, "h2"); !errors.Is(err, store.ErrExists) {
		t.Errorf("second create: %v; want ErrExists", err)
	}
	sess := api.APIToken{ID: "s1", Name: "session", Kind: api.TokenSession, Owner: "alice", Groups: []string{"ops"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateAPIToken(ctx, sess, "sh"); err != nil {
		t.Fatal(err)
	}
	bad := api.APIToken{ID: "t0", Name: "ci", Kind: api.TokenAPI, Owner: "alice", Role: "nosuch", Project: "default", CreatedAt: now}
	var invalid *store.InvalidError
	if err := s.CreateAPIToken(ctx, bad, "x"); !errors.As(err, &invalid) {
		t.Errorf("token with an unknown role: %v; want InvalidError", err)
	}
	bad.Role, bad.Project = "viewer", "nosuch"
	if err := s.CreateAPIToken(ctx, bad, "x"); !errors.As(err, &invalid) {
		t.Errorf("token in an unknown project: %v; want InvalidError", err)
	}
	tok := api.APIToken{ID: "t1", Name: "ci", Kind: api.TokenAPI, Owner: "alice", Role: "viewer", Project: "default", CreatedAt: now, ExpiresAt: now.Add(-time.Minute)}
	if err := s.CreateAPIToken(ctx, tok, "th"); err != nil {
		t.Fatal(err)
	}
	got, hash, err := s.GetAPIToken(ctx, "s1")
	if err != nil || hash != "sh" || got.Owner != "alice" || !slices.Equal(got.Groups, []string{"ops"}) || got.Kind != api.TokenSession || !got.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Errorf("GetAPIToken(s1) = %+v %q %v", got, hash, err)
	}
	if ts, err := s.ListAPITokens(ctx, api.TokenAPI); err != nil || len(ts) != 1 || ts[0].ID != "t1" || ts[0].Role != "viewer" {
		t.Errorf("ListAPITokens(api) = %+v, %v; want t1", ts, err)
	}
	if n, err := s.PruneAPITokens(ctx, now); err != nil || n != 1 {
		t.Errorf("PruneAPITokens = %d, %v; want the expired t1 gone", n, err)
	}
	// A new password ends the user's sessions, in the same transaction.
	h := "h3"
	u, err := s.UpdateUser(ctx, "alice", &h, nil)
	if err != nil || u.Version != 2 {
		t.Fatalf("UpdateUser = %+v, %v", u, err)
	}
	if _, _, err := s.GetAPIToken(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after a password change: %v; want gone", err)
	}
	if _, hash, _ := s.GetUser(ctx, "alice"); hash != "h3" {
		t.Errorf("password hash %q; want h3", hash)
	}
	disabled := true
	if u, err := s.UpdateUser(ctx, "alice", nil, &disabled); err != nil || !u.Disabled {
		t.Errorf("disable: %+v, %v", u, err)
	}
	if _, err := s.UpdateUser(ctx, "bob", nil, &disabled); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateUser(unknown): %v; want ErrNotFound", err)
	}
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if us, err := s.ListUsers(ctx); err != nil || len(us) != 0 {
		t.Errorf("users after delete: %v, %v", us, err)
	}
}

func testRolesBindingsProjects(t *testing.T, s store.Store) {
	now := time.Now().UTC()
	if ps, err := s.ListProjects(ctx); err != nil || len(ps) != 1 || ps[0].Name != api.DefaultProject {
		t.Fatalf("a new store's projects: %+v, %v; want default alone", ps, err)
	}
	alpha := api.Project{Name: "alpha", NodeSelector: spec.Selector{MatchLabels: map[string]string{"team": "a"}}, CreatedAt: now}
	if err := s.CreateProject(ctx, alpha); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateProject(ctx, alpha); !errors.Is(err, store.ErrExists) {
		t.Errorf("second create: %v; want ErrExists", err)
	}
	if p, err := s.GetProject(ctx, "alpha"); err != nil || p.NodeSelector.MatchLabels["team"] != "a" {
		t.Errorf("GetProject = %+v, %v", p, err)
	}
	if err := s.PutRole(ctx, api.Role{Name: "deployer", Permissions: []string{"deployments:*"}, CreatedAt: now}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRole(ctx, api.Role{Name: "nosuch", Permissions: []string{"x"}}, true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update of an unknown role: %v; want ErrNotFound", err)
	}
	var invalid *store.InvalidError
	if err := s.CreateBinding(ctx, api.Binding{ID: "b0", Subject: "user:alice", Role: "deployer", Project: "nosuch", CreatedAt: now}); !errors.As(err, &invalid) {
		t.Errorf("binding to an unknown project: %v; want InvalidError", err)
	}
	if err := s.CreateBinding(ctx, api.Binding{ID: "b0", Subject: "user:alice", Role: "nosuch", Project: "alpha", CreatedAt: now}); !errors.As(err, &invalid) {
		t.Errorf("binding of an unknown role: %v; want InvalidError", err)
	}
	for _, b := range []api.Binding{
		{ID: "b1", Subject: "user:alice", Role: "deployer", Project: "alpha", CreatedAt: now},
		{ID: "b2", Subject: "group:ops", Role: "admin", Project: "*", CreatedAt: now},
	} {
		if err := s.CreateBinding(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateBinding(ctx, api.Binding{ID: "b3", Subject: "user:alice", Role: "deployer", Project: "alpha", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Errorf("the same binding twice: %v; want ErrExists", err)
	}
	if bs, err := s.ListBindings(ctx, []string{"user:alice", "group:ops"}); err != nil || len(bs) != 2 {
		t.Errorf("ListBindings = %+v, %v; want 2", bs, err)
	}
	if err := s.DeleteRole(ctx, "deployer"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete a bound role: %v; want ErrConflict", err)
	}
	if _, err := s.PutDeployment(ctx, api.Deployment{Project: "alpha", Name: "web", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteProject(ctx, "alpha"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete a project with a deployment: %v; want ErrConflict", err)
	}
	if err := s.DeleteDeployment(ctx, "alpha", "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteProject(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	// Its bindings went with it: a project made later under its name
	// inherits nobody's rights.
	if bs, _ := s.ListBindings(ctx, nil); len(bs) != 1 || bs[0].ID != "b2" {
		t.Errorf("bindings after the project's deletion: %+v; want b2 alone", bs)
	}
	if err := s.DeleteRole(ctx, "deployer"); err != nil {
		t.Errorf("delete a role nothing holds: %v", err)
	}
}

// Every write made under an audit entry commits the entry's record with
// it, chained to the one before; a write that fails writes none.
func testAuditChain(t *testing.T, s store.Store) {
	entry := func(i int) *store.AuditEntry {
		return store.NewAuditEntry(api.AuditRecord{Actor: "user:alice", Action: "POST /v1/users", Source: "127.0.0.1", RequestID: fmt.Sprint(i)})
	}
	e := entry(1)
	if err := s.CreateUser(store.WithAudit(ctx, e), api.User{Name: "u1", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	if e.Committed() != 1 {
		t.Errorf("committed %d records; want 1", e.Committed())
	}
	e = entry(2)
	if err := s.CreateUser(store.WithAudit(ctx, e), api.User{Name: "u1", CreatedAt: time.Now()}, "h"); !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	if e.Committed() != 0 {
		t.Error("a failed write committed its audit record")
	}
	if err := s.AppendAudit(ctx, e.Record("409 conflict")); err != nil {
		t.Fatal(err)
	}
	// Concurrent requests: the chain never forks.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := s.CreateUser(store.WithAudit(ctx, entry(10+i)), api.User{Name: fmt.Sprint("c", i), CreatedAt: time.Now()}, "h"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	recs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(recs) != 10 {
		t.Fatalf("ListAudit = %d records, %v; want 10", len(recs), err)
	}
	if recs[0].Result != "ok" || recs[1].Result != "409 conflict" {
		t.Errorf("results %q, %q; want ok, 409 conflict", recs[0].Result, recs[1].Result)
	}
	head, err := s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var v audit.Verifier
	for _, r := range recs {
		v.Add(r)
	}
	if n, problems := v.Done(head); n != 10 || len(problems) > 0 {
		t.Errorf("verify: %d records, %q; want 10 and no problem", n, problems)
	}
	if got, _ := s.ListAudit(ctx, store.AuditFilter{AfterSeq: 8}); len(got) != 2 || got[0].Seq != 9 {
		t.Errorf("records after 8: %+v", got)
	}
	if got, _ := s.ListAudit(ctx, store.AuditFilter{Actor: "bob"}); len(got) != 0 {
		t.Errorf("bob's records: %d; want none", len(got))
	}
	if got, _ := s.ListAudit(ctx, store.AuditFilter{Actor: "alice", Limit: 3}); len(got) != 3 {
		t.Errorf("alice's first 3 records: %d", len(got))
	}
}

// A status observed before the one recorded, and delivered after it (a
// report handed from one leader to the next), does not overwrite it; one
// observed long before is a clock set back, and is recorded; a move to
// another spec starts the instance's statuses afresh.
func testLateStatus(t *testing.T, s store.Store) {
	in := api.Instance{ID: "i1", Project: "default", Deployment: "web", NodeID: "a", Revision: 1, SpecHash: "h", State: api.InstancePending, CreatedAt: time.Now()}
	if err := s.ApplyPlacement(ctx, []api.Instance{in}, nil); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	state := func() api.InstanceState {
		is, err := s.ListInstances(ctx, store.InstanceFilter{Deployment: "web"})
		if err != nil || len(is) != 1 {
			t.Fatalf("instances %v, %v", is, err)
		}
		return is[0].State
	}
	ok, err := s.UpdateInstanceStatuses(ctx, []store.InstanceStatus{
		{ID: "i1", NodeID: "a", SpecHash: "h", State: api.InstancePulling, At: t0},
		{ID: "i1", NodeID: "a", SpecHash: "h", State: api.InstanceRunning, At: t0.Add(2 * time.Second)},
		{ID: "i1", NodeID: "a", SpecHash: "h", State: api.InstanceStarting, At: t0.Add(time.Second)}, // late
	})
	if err != nil || !ok[0] || !ok[1] || ok[2] {
		t.Errorf("statuses matched %v, %v; want the late one ignored", ok, err)
	}
	if got := state(); got != api.InstanceRunning {
		t.Errorf("state %s after a late starting; want running", got)
	}
	if err := s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "i1", NodeID: "a", State: api.InstanceFailed, At: t0.Add(-time.Hour)}); err != nil {
		t.Errorf("a status from an hour before (a clock set back): %v; want it recorded", err)
	}
	if got := state(); got != api.InstanceFailed {
		t.Errorf("state %s; want failed", got)
	}
	if err := s.SetInstanceRevision(ctx, []string{"i1"}, 2, "h2"); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateInstanceStatus(ctx, store.InstanceStatus{ID: "i1", NodeID: "a", SpecHash: "h2", State: api.InstancePulling, At: t0.Add(-2 * time.Hour)}); err != nil {
		t.Errorf("the first status of the new spec: %v; want it recorded", err)
	}
}
