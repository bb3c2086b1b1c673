package pgtest_test

import (
	"context"
	"database/sql"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/dockfleet/dockfleet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestDSN checks that each test gets a database of its own, empty and
// writable, and that it is gone when the test ends.
func TestDSN(t *testing.T) {
	ctx := context.Background()
	var first string
	t.Run("first", func(t *testing.T) {
		first = pgtest.DSN(t)
		db := open(t, first)
		if _, err := db.ExecContext(ctx, "CREATE TABLE t (x BIGINT)"); err != nil {
			t.Fatal(err)
		}
		if second := pgtest.DSN(t); second == first {
			t.Fatalf("two DSNs of one test are the same: %s", first)
		} else if _, err := open(t, second).ExecContext(ctx, "CREATE TABLE t (x BIGINT)"); err != nil {
			t.Errorf("the second database is not empty: %v", err)
		}
	})
	if first == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no PostgreSQL: it is required when CI=true")
		}
		t.Skip("no PostgreSQL")
	}
	db := open(t, first)
	if err := db.PingContext(ctx); err == nil {
		t.Errorf("the database of a test that ended still answers at %s", first)
	}
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
