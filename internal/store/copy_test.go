package store_test

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// fill writes one of each kind of object into s, through the Store API
// the server uses.
func fill(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.CreateAPIToken(ctx, api.APIToken{ID: "admin", Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "hash-admin"))
	must(s.CreateEnrollToken(ctx, api.EnrollToken{ID: "tok", Labels: map[string]string{"role": "web"}, MaxUses: 5, ExpiresAt: now.Add(time.Hour),
		CreatedAt: now, AgentLabels: []string{"zone"}}, "hash-tok"))
	for _, name := range []string{"edge-1", "edge-2", "edge-3"} {
		_, err := s.Enroll(ctx, "tok", func(api.EnrollToken, string, *api.Node) error { return nil },
			api.Node{ID: "id-" + name, Name: name, Labels: map[string]string{"role": "web"}, State: api.NodeReady, LastSeen: now, CreatedAt: now,
				Facts: api.Facts{Hostname: name, CPUs: 2}})
		must(err)
	}
	_, err := s.RevokeNode(ctx, "id-edge-3", "stolen", now)
	must(err)
	sp := spec.Deployment{APIVersion: "dockfleet.io/v1", Kind: "Deployment", Metadata: spec.Metadata{Name: "web"}}
	d := api.Deployment{Project: "default", Name: "web", Revision: 1, Spec: sp, CreatedAt: now, UpdatedAt: now}
	rev := api.Revision{Project: "default", Deployment: "web", Number: 1, Spec: sp, Cause: "apply", CreatedAt: now}
	ro := api.Rollout{ID: "ro1", Project: "default", Deployment: "web", To: 1, State: api.RolloutRunning, CreatedAt: now}
	_, err = s.ApplyRevision(ctx, d, rev, ro, []api.Event{{Time: now, Project: "default", Deployment: "web", Rollout: "ro1", Type: "rollout.started", Message: "go"}})
	must(err)
	must(s.ApplyPlacement(ctx, []api.Instance{
		{ID: "i1", Project: "default", Deployment: "web", NodeID: "id-edge-1", Revision: 1, SpecHash: "h1", State: api.InstanceHealthy, CreatedAt: now, UpdatedAt: now},
		{ID: "i2", Project: "default", Deployment: "web", NodeID: "id-edge-2", Revision: 1, SpecHash: "h1", State: api.InstancePending, CreatedAt: now, UpdatedAt: now},
	}, nil))
	must(s.AppendEvents(ctx, []api.Event{{Time: now, Project: "default", Deployment: "web", Type: "instance.healthy", Message: "i1"}}))
	_, err = s.AcquireLease(ctx, "controller", "old-replica", time.Minute)
	must(err)
}

// snapshot is everything a store holds, as the Store API reads it.
type snapshot struct {
	AdminHash string
	Tokens    []api.EnrollToken
	Nodes     []api.Node
	Revoked   []store.RevokedNode
	Deps      []api.Deployment
	Revisions []api.Revision
	Rollouts  []api.Rollout
	Instances []api.Instance
	Events    []api.Event
	Seq       store.StateSeq
}

func read(t *testing.T, s store.Store) snapshot {
	t.Helper()
	ctx := context.Background()
	var sn snapshot
	var err error
	errs := []error{}
	_, sn.AdminHash, err = s.GetAPIToken(ctx, "admin")
	errs = append(errs, err)
	sn.Tokens, err = s.ListEnrollTokens(ctx)
	errs = append(errs, err)
	sn.Nodes, err = s.ListNodes(ctx)
	errs = append(errs, err)
	sn.Revoked, err = s.ListRevokedNodes(ctx)
	errs = append(errs, err)
	sn.Deps, err = s.ListDeployments(ctx, "")
	errs = append(errs, err)
	sn.Revisions, err = s.ListRevisions(ctx, "default", "web")
	errs = append(errs, err)
	sn.Rollouts, err = s.ActiveRollouts(ctx)
	errs = append(errs, err)
	sn.Instances, err = s.ListInstances(ctx, store.InstanceFilter{})
	errs = append(errs, err)
	sn.Events, err = s.ListEvents(ctx, store.EventFilter{})
	errs = append(errs, err)
	sn.Seq, err = s.StateSeq(ctx)
	errs = append(errs, err)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return sn
}

func TestCopySQLiteToPostgres(t *testing.T) {
	ctx := context.Background()
	from, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "dockfleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	fill(t, from)
	to := openPostgres(t, pgtest.DSN(t))

	counts, err := store.Copy(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int64{}
	for _, c := range counts {
		rows[c.Table] = c.Rows
	}
	for table, want := range map[string]int64{"nodes": 3, "revoked_nodes": 1, "instances": 2, "events": 2, "deployments": 1, "leases": 1, "state_seq": 1} {
		if rows[table] != want {
			t.Errorf("copied %d rows of %s; want %d (all counts: %v)", rows[table], table, want, counts)
		}
	}
	if got, want := read(t, to), read(t, from); !reflect.DeepEqual(got, want) {
		t.Fatalf("PostgreSQL after the copy differs from SQLite:\n got %+v\nwant %+v", got, want)
	}
	// The copy goes on where SQLite was: events number on, leases change hands.
	if err := to.AppendEvents(ctx, []api.Event{{Time: time.Now(), Project: "default", Type: "after"}}); err != nil {
		t.Fatal(err)
	}
	evs, _ := to.ListEvents(ctx, store.EventFilter{})
	if n := len(evs); n != 3 || evs[2].Seq <= evs[1].Seq {
		t.Fatalf("events after the copy: %+v; want a third numbered after the copied ones", evs)
	}
	if l, err := to.AcquireLease(ctx, "controller", "new-replica", time.Minute); err != nil || l.Holder != "old-replica" {
		t.Fatalf("the copied lease: %+v, %v; want the old replica's until it expires", l, err)
	}

	// A second copy into the same database is refused, and changes nothing.
	before := read(t, to)
	if _, err := store.Copy(ctx, from, to); err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "nodes (3 rows)") {
		t.Fatalf("copy into a database with data: got %v; want a refusal naming what it holds", err)
	}
	if after := read(t, to); !reflect.DeepEqual(after, before) {
		t.Fatal("a refused copy changed the destination")
	}
}
