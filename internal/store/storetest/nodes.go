package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// SQLiteWithNodes opens a SQLite store in a temporary directory, closed
// when t ends, with nodes enrolled as they are given: a real store for the
// tests of the parts that read and write it.
func SQLiteWithNodes(t testing.TB, nodes ...api.Node) store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateEnrollToken(ctx, api.EnrollToken{ID: "storetest", MaxUses: len(nodes)}, "hash"); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if _, err := st.Enroll(ctx, "storetest", func(api.EnrollToken, string, *api.Node) error { return nil }, n); err != nil {
			t.Fatalf("enrolling node %s: %v", n.ID, err)
		}
	}
	return st
}
