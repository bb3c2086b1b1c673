package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/leader"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/store/storetest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openPostgres(t *testing.T, url string) *store.Postgres {
	t.Helper()
	s, err := store.OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openPostgres(t, pgtest.DSN(t)) })
}

// A leader renews its lease, and a replica its record, in time however
// busy the fleet keeps the store: here every connection of the server's
// main pool waits behind a lock, as thousands of agents enrolling at once
// make them, and both are still renewed within a renewal interval.
func TestPostgresLeaseRenewsWhileThePoolIsBusy(t *testing.T) {
	ctx := context.Background()
	url := pgtest.DSN(t)
	s := openPostgres(t, url)
	if _, err := s.AcquireLease(ctx, "controller", "r1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	const enrolling = 40 // more than the main pool's connections
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "busy", MaxUses: enrolling}, "hash"); err != nil {
		t.Fatal(err)
	}
	// Another client locks the nodes table, as a long transaction would.
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, "LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer lock.Rollback() // lets the enrollments through, before wg.Wait
	for i := range enrolling {
		wg.Go(func() {
			n := api.Node{ID: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("edge-%d", i), Labels: map[string]string{}, State: api.NodeReady}
			if _, err := s.Enroll(ctx, "busy", func(api.EnrollToken, string, *api.Node) error { return nil }, n); err != nil {
				t.Errorf("enrolling %s: %v", n.ID, err)
			}
		})
	}
	// Wait until the enrollments wait on the lock, the pool full.
	testenv.Eventually(t, 30*time.Second, "the main pool full, enrollments waiting", func() error {
		if st := store.PoolStats(s); st.InUse < st.MaxOpenConnections || st.WaitCount == 0 {
			return fmt.Errorf("%d of %d connections in use, %d waits", st.InUse, st.MaxOpenConnections, st.WaitCount)
		}
		return nil
	})
	rctx, cancel := context.WithTimeout(ctx, leader.DefaultTTL/3)
	defer cancel()
	l, err := s.AcquireLease(rctx, "controller", "r1", 5*time.Second)
	if err != nil || l.Holder != "r1" || l.Epoch != 1 {
		t.Fatalf("renewing the lease with the pool full: %+v, %v; want r1's epoch 1 renewed", l, err)
	}
	// So are the replicas' records, and the leader reads them.
	if err := s.ReplicaSeen(rctx, store.Replica{ID: "r1", StartedAt: time.Now()}); err != nil {
		t.Fatalf("renewing the replica's record with the pool full: %v", err)
	}
	if rs, err := s.ListReplicas(rctx); err != nil || len(rs) != 1 || rs[0].ID != "r1" {
		t.Fatalf("reading the replicas' records with the pool full: %+v, %v; want r1's", rs, err)
	}
}
