package store_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/store/storetest"
)

func openSQLite(t *testing.T, path string) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "state.db"))
	})
}

func TestSQLiteReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openSQLite(t, path)
	if err := s.CreateAPIToken(context.Background(), api.APIToken{ID: "a", Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "h"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openSQLite(t, path) // migrations run again and must be a no-op
	if _, h, err := s2.GetAPIToken(context.Background(), "a"); err != nil || h != "h" {
		t.Errorf("after reopen: %q, %v; want h", h, err)
	}
}
