package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// sealedStore is the part of a store that holds the server's sealed
// secrets (package seal). Every backend has it: replicas share their CA
// and admin token through it.
type sealedStore interface {
	PutSealedIfAbsent(ctx context.Context, sec store.Sealed) (store.Sealed, bool, error)
	GetSealed(ctx context.Context, name string) (store.Sealed, error)
}

func testSealed(t *testing.T, s store.Store) {
	st, ok := s.(sealedStore)
	if !ok {
		t.Fatalf("%T has no PutSealedIfAbsent and GetSealed", s)
	}
	if _, err := st.GetSealed(ctx, "ca"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSealed of an empty store: got %v; want ErrNotFound", err)
	}
	// Every byte value, as sealed blobs are binary: a backend that stores
	// them as text would mangle them.
	blob := make([]byte, 512)
	for i := range blob {
		blob[i] = byte(i)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	first := store.Sealed{Name: "ca", KeyID: "3f2a9c1b0d4e5f60", Blob: blob, CreatedAt: at}
	got, created, err := st.PutSealedIfAbsent(ctx, first)
	if err != nil || !created {
		t.Fatalf("first put: created %v, %v; want created", created, err)
	}
	checkSealed(t, "first put", got, first)
	got, err = st.GetSealed(ctx, "ca")
	if err != nil {
		t.Fatal(err)
	}
	checkSealed(t, "get", got, first)

	// A second put of the name changes nothing and returns the first.
	second := store.Sealed{Name: "ca", KeyID: "9c1b000000000000", Blob: []byte("other"), CreatedAt: at.Add(time.Hour)}
	got, created, err = st.PutSealedIfAbsent(ctx, second)
	if err != nil || created {
		t.Fatalf("second put: created %v, %v; want the first one kept", created, err)
	}
	checkSealed(t, "second put", got, first)
	if got, _ = st.GetSealed(ctx, "ca"); !bytes.Equal(got.Blob, blob) {
		t.Error("a second put replaced the first secret")
	}

	// Names are independent.
	tok := store.Sealed{Name: "admin-token", KeyID: first.KeyID, Blob: []byte{0, 1, 2}, CreatedAt: at}
	if got, created, err = st.PutSealedIfAbsent(ctx, tok); err != nil || !created {
		t.Fatalf("another name: created %v, %v; want created", created, err)
	}
	checkSealed(t, "another name", got, tok)

	for _, bad := range []store.Sealed{{KeyID: "k", Blob: blob}, {Name: "n", Blob: blob}, {Name: "n", KeyID: "k"}} {
		if _, _, err := st.PutSealedIfAbsent(ctx, bad); err == nil {
			t.Errorf("put %+v: no error; want name, key ID and blob required", bad)
		}
	}
}

// testSealedRace is replicas starting together on a new store, each with
// a CA of its own: one CA is stored, and every replica gets that one.
func testSealedRace(t *testing.T, s store.Store) {
	st, ok := s.(sealedStore)
	if !ok {
		t.Fatalf("%T has no PutSealedIfAbsent and GetSealed", s)
	}
	const replicas = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners int
		seen    = map[string]bool{}
	)
	for i := range replicas {
		wg.Go(func() {
			got, created, err := st.PutSealedIfAbsent(ctx, store.Sealed{Name: "ca", KeyID: "k", Blob: []byte{byte(i), 0xff}})
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if created {
				winners++
			}
			seen[string(got.Blob)] = true
		})
	}
	wg.Wait()
	if winners != 1 || len(seen) != 1 {
		t.Errorf("%d replicas stored their secret and they got %d different ones; want 1 and 1", winners, len(seen))
	}
}

func checkSealed(t *testing.T, what string, got, want store.Sealed) {
	t.Helper()
	if got.Name != want.Name || got.KeyID != want.KeyID || !bytes.Equal(got.Blob, want.Blob) || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("%s: got %s/%s, %d bytes, %v; want %s/%s, %d bytes, %v", what, got.Name, got.KeyID, len(got.Blob), got.CreatedAt,
			want.Name, want.KeyID, len(want.Blob), want.CreatedAt)
	}
}

// testSealedReplace is two replicas changing one secret at once (two CA
// rotations begun through two replicas): the change made from the value
// both read wins, the other is told of the conflict.
func testSealedReplace(t *testing.T, s store.Store) {
	first := store.Sealed{Name: "ca", KeyID: "k1", Blob: []byte("roots-1"), CreatedAt: time.Unix(1700000000, 0).UTC()}
	if _, _, err := s.PutSealedIfAbsent(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := store.Sealed{Name: "ca", KeyID: "k1", Blob: []byte("roots-2"), CreatedAt: first.CreatedAt.Add(time.Hour)}
	if err := s.ReplaceSealed(ctx, first, second); err != nil {
		t.Fatalf("replacing what was read: %v", err)
	}
	got, err := s.GetSealed(ctx, "ca")
	if err != nil {
		t.Fatal(err)
	}
	checkSealed(t, "after replacing", got, second)
	late := store.Sealed{Name: "ca", KeyID: "k1", Blob: []byte("roots-2b"), CreatedAt: second.CreatedAt}
	if err := s.ReplaceSealed(ctx, first, late); !errors.Is(err, store.ErrConflict) {
		t.Errorf("replacing from a stale read: got %v; want ErrConflict", err)
	}
	if got, _ = s.GetSealed(ctx, "ca"); !bytes.Equal(got.Blob, second.Blob) {
		t.Errorf("after a stale replace the store holds %q; want %q", got.Blob, second.Blob)
	}
	if err := s.ReplaceSealed(ctx, store.Sealed{Name: "none", Blob: []byte("x")}, store.Sealed{Name: "none", KeyID: "k", Blob: []byte("y")}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("replacing a secret the store does not hold: got %v; want ErrConflict", err)
	}
	if err := s.ReplaceSealed(ctx, second, store.Sealed{Name: "other", KeyID: "k", Blob: []byte("y")}); err == nil || errors.Is(err, store.ErrConflict) {
		t.Errorf("replacing under another name: got %v; want a usage error", err)
	}
}

// testNodeCerts: the newest certificate recorded of each node, replaced
// by the next, and gone with its node.
func testNodeCerts(t *testing.T, s store.Store) {
	if err := s.CreateEnrollToken(ctx, api.EnrollToken{ID: "t", CreatedAt: time.Now()}, "h"); err != nil {
		t.Fatal(err)
	}
	pass := func(api.EnrollToken, string, *api.Node) error { return nil }
	for _, n := range []api.Node{newNode("a", "alpha"), newNode("b", "beta"), newNode("c", "gamma")} {
		if _, err := s.Enroll(ctx, "t", pass, n); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Unix(1700000000, 0).UTC()
	for _, c := range []store.NodeCert{
		{NodeID: "a", CA: "old", IssuedAt: at, NotAfter: at.Add(time.Hour)},
		{NodeID: "b", CA: "old", IssuedAt: at, NotAfter: at.Add(time.Hour)},
		{NodeID: "a", CA: "new", IssuedAt: at.Add(time.Minute), NotAfter: at.Add(2 * time.Hour)},
		{NodeID: "gone", CA: "old", IssuedAt: at, NotAfter: at.Add(time.Hour)}, // no such node
	} {
		if err := s.RecordNodeCert(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteNode(ctx, "b", "removed", at); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListNodeCerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.NodeCert{{NodeID: "a", CA: "new", IssuedAt: at.Add(time.Minute), NotAfter: at.Add(2 * time.Hour)}}
	if len(got) != len(want) || got[0].NodeID != want[0].NodeID || got[0].CA != want[0].CA ||
		!got[0].IssuedAt.Equal(want[0].IssuedAt) || !got[0].NotAfter.Equal(want[0].NotAfter) {
		t.Errorf("ListNodeCerts = %+v; want %+v (a's newest; b removed, c never recorded, no unknown node)", got, want)
	}
}
