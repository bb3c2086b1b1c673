package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
)

// TestIsFull fills the store (SQLite's max_page_count stands in for a full
// disk): the failed write is recognized as "disk full",
// and other errors are not taken for it.
func TestIsFull(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "dockfleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateAPIToken(ctx, api.APIToken{ID: "before", Name: "before", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "hash"); err != nil {
		t.Fatal(err)
	}
	var pages int
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		t.Fatal(err)
	}
	err = s.CreateAPIToken(ctx, api.APIToken{ID: "big", Name: strings.Repeat("x", 1<<20), Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "hash")
	if !IsFull(err) {
		t.Fatalf("a write to a full store: %v; want an error IsFull recognizes", err)
	}
	if IsFull(s.CreateAPIToken(ctx, api.APIToken{ID: "before", Name: "again", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "hash")) || IsFull(ErrNotFound) || IsFull(nil) {
		t.Error("IsFull took another error for a full disk")
	}
}
