package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

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
