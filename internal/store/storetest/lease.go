package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

func testLeases(t *testing.T, s store.Store) {
	const ttl = time.Minute
	l, err := s.AcquireLease(ctx, "controller", "a", ttl)
	if err != nil || l != (store.Lease{Holder: "a", Epoch: 1}) {
		t.Fatalf("first acquire = %+v, %v; want a's, epoch 1", l, err)
	}
	if l, err = s.AcquireLease(ctx, "controller", "b", ttl); err != nil || l.Holder != "a" {
		t.Fatalf("b's acquire of a held lease = %+v, %v; want a's still", l, err)
	}
	if l, err = s.AcquireLease(ctx, "controller", "a", ttl); err != nil || l != (store.Lease{Holder: "a", Epoch: 1}) {
		t.Fatalf("a's renewal = %+v, %v; want a's, epoch 1", l, err)
	}
	if l, err = s.AcquireLease(ctx, "other", "b", ttl); err != nil || l != (store.Lease{Holder: "b", Epoch: 1}) {
		t.Fatalf("another lease = %+v, %v; want b's, epoch 1", l, err)
	}
	// A release by a holder of another epoch, or another holder, changes nothing.
	for _, r := range []struct {
		holder string
		epoch  int64
	}{{"b", 1}, {"a", 2}} {
		if err := s.ReleaseLease(ctx, "controller", r.holder, r.epoch); err != nil {
			t.Fatal(err)
		}
		if l, _ := s.AcquireLease(ctx, "controller", "b", ttl); l.Holder != "a" {
			t.Fatalf("after a release by %s of epoch %d, b took the lease", r.holder, r.epoch)
		}
	}
	if err := s.ReleaseLease(ctx, "controller", "a", 1); err != nil {
		t.Fatal(err)
	}
	if l, err = s.AcquireLease(ctx, "controller", "b", ttl); err != nil || l != (store.Lease{Holder: "b", Epoch: 2}) {
		t.Fatalf("acquire after a released = %+v, %v; want b's, epoch 2", l, err)
	}
}

func testLeaseExpires(t *testing.T, s store.Store) {
	if _, err := s.AcquireLease(ctx, "controller", "a", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := s.AcquireLease(ctx, "controller", "b", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if l.Holder == "b" {
			if l.Epoch != 2 {
				t.Fatalf("b took the expired lease at epoch %d; want 2", l.Epoch)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lease of 1 ms still held after 5 s")
		}
		time.Sleep(time.Millisecond) // the store's clock must pass a's expiry
	}
	if l, _ := s.AcquireLease(ctx, "controller", "a", time.Minute); l.Holder != "b" {
		t.Fatalf("a renewed a lease it lost: %+v", l)
	}
}

func testLeaseOneHolderUnderConcurrency(t *testing.T, s store.Store) {
	const n = 8
	got := make([]store.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = s.AcquireLease(ctx, "controller", fmt.Sprintf("r%d", i), time.Minute) })
	}
	wg.Wait()
	holders := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		holders[got[i].Holder] = true
	}
	if len(holders) != 1 {
		t.Fatalf("replicas racing for one lease were told of holders %v; want one", holders)
	}
}

func testFencedWrites(t *testing.T, s store.Store) {
	l, err := s.AcquireLease(ctx, "controller", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fenced := store.WithFence(ctx, store.Fence{Name: "controller", Holder: "a", Epoch: l.Epoch})
	d := api.Deployment{Project: "default", Name: "web", Revision: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if _, err := s.PutDeployment(fenced, d); err != nil {
		t.Fatalf("write under the lease held: %v", err)
	}
	if err := s.ReleaseLease(ctx, "controller", "a", l.Epoch); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "controller", "b", time.Minute); err != nil {
		t.Fatal(err)
	}
	d.Name = "api"
	if _, err := s.PutDeployment(fenced, d); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("write under a lost lease: got %v; want ErrFenced", err)
	}
	if _, err := s.GetDeployment(ctx, "default", "api"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the fenced write left a deployment behind: %v", err)
	}
}
