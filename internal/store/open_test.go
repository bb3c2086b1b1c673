package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/store"
)

// TestOpenEngines checks that each form of store URL opens the engine it
// names, and that the data is there when opened again.
func TestOpenEngines(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		name, url string
		want      func(store.Store) bool
	}{
		{"default", "", func(s store.Store) bool {
			l, ok := s.(*store.SQLite)
			return ok && l.Path() == filepath.Join(dir, "dockfleet.db")
		}},
		{"sqlite", "sqlite:" + filepath.Join(dir, "other.db"), func(s store.Store) bool {
			l, ok := s.(*store.SQLite)
			return ok && l.Path() == filepath.Join(dir, "other.db")
		}},
		{"sqlite URL", "sqlite://" + filepath.Join(dir, "third.db"), func(s store.Store) bool {
			l, ok := s.(*store.SQLite)
			return ok && l.Path() == filepath.Join(dir, "third.db")
		}},
		{"postgres", "", nil},
		{"postgres keyword DSN", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.name, "postgres") {
				dsn := pgtest.DSN(t)
				tt.url = dsn
				if tt.name == "postgres keyword DSN" {
					u, _ := url.Parse(dsn)
					tt.url = "host=" + u.Hostname() + " port=" + u.Port() + " user=" + u.User.Username() + " dbname=" + strings.TrimPrefix(u.Path, "/") + " sslmode=disable"
				}
				tt.want = func(s store.Store) bool {
					p, ok := s.(*store.Postgres)
					return ok && p.URL() == tt.url
				}
			}
			s, err := store.Open(ctx, tt.url, dir)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(s) {
				t.Errorf("Open(%q) = %T; want the engine it names", tt.url, s)
			}
			err = s.CreateAPIToken(ctx, api.APIToken{ID: "a", Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "h")
			s.Close()
			if err != nil {
				t.Fatal(err)
			}
			s, err = store.Open(ctx, tt.url, dir) // migrations run again and do nothing
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, h, err := s.GetAPIToken(ctx, "a"); err != nil || h != "h" {
				t.Errorf("after reopening: %q, %v; want h", h, err)
			}
		})
	}
}

// TestOpenRefusesBadURLs checks the errors of store URLs that cannot work:
// each says what is wrong, and none shows the password.
func TestOpenRefusesBadURLs(t *testing.T) {
	ctx := context.Background()
	// A listener that never answers stands in for a server behind a
	// firewall that drops packets.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var running *url.URL
	tests := []struct {
		name, url string
		want      string
	}{
		{"unknown scheme", "mysql://x:s3cret@db:3306/dockfleet",
			`store: unknown kind of store URL "mysql:": use sqlite:PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE`},
		{"bare path", "/var/lib/dockfleet.db", `store: "/var/lib/dockfleet.db" names no engine: use sqlite:PATH`},
		{"empty sqlite", "sqlite:", `store: "sqlite:" names no file`},
		{"malformed", "postgres://x:s3cret@127.0.0.1:port/dockfleet", "store: the PostgreSQL URL is not valid: "},
		{"refused", "postgres://x:s3cret@127.0.0.1:1/dockfleet",
			"store: connecting to PostgreSQL at 127.0.0.1:1 (database dockfleet, user x): connection refused"},
		{"silent", "postgres://x:s3cret@" + silent.Addr().String() + "/dockfleet?connect_timeout=1",
			"store: connecting to PostgreSQL at " + silent.Addr().String() + " (database dockfleet, user x): no answer within 1s"},
		{"no such database", "", `(database nosuch, user postgres): database "nosuch" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.url == "" {
				if running == nil {
					running, _ = url.Parse(pgtest.DSN(t))
				}
				u := *running
				u.User, u.Path = url.UserPassword("postgres", "s3cret"), "/nosuch"
				tt.url = u.String()
			}
			start := time.Now()
			s, err := store.Open(ctx, tt.url, t.TempDir())
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded; want an error", tt.url)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%q): %v; want %q", tt.url, err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Open(%q): %v; shows the password", tt.url, err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Open(%q) took %v; want an answer within 10s", tt.url, d)
			}
			// CheckURL, which does not connect, knows only the URLs of no engine.
			if engineless := !strings.Contains(tt.url, "postgres://"); (store.CheckURL(tt.url) != nil) != engineless {
				t.Errorf("CheckURL(%q) = %v; want an error only for a URL of no engine", tt.url, store.CheckURL(tt.url))
			}
		})
	}
}

// TestOpenRefusesNewerSchema checks that neither engine opens a database a
// newer dockfleet migrated: this one cannot read what it does not know.
func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			u, driver, dsn := "sqlite:"+filepath.Join(t.TempDir(), "x.db"), "sqlite", ""
			dsn = strings.TrimPrefix(u, "sqlite:")
			if engine == "postgres" {
				u = pgtest.DSN(t)
				driver, dsn = "pgx", u
			}
			s, err := store.Open(ctx, u, "")
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			_, err = db.ExecContext(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (99, TRUE)`)
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			s, err = store.Open(ctx, u, "")
			if err == nil {
				s.Close()
				t.Fatal("Open of a database at schema version 99 succeeded; want a refusal")
			}
			if want := "the database is at schema version 99; this dockfleet knows up to "; !strings.Contains(err.Error(), want) ||
				!strings.Contains(err.Error(), "run a newer dockfleet") {
				t.Errorf("Open: %v; want %q and what to do", err, want)
			}
		})
	}
}

// TestOpenPostgresTogether starts several stores at once on one new
// database, as replicas do: one migrates, the others wait, and all open.
func TestOpenPostgresTogether(t *testing.T) {
	dsn := pgtest.DSN(t)
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			s, err := store.OpenPostgres(context.Background(), dsn)
			if err == nil {
				err = s.CreateAPIToken(context.Background(), api.APIToken{ID: fmt.Sprint(time.Now().UnixNano(), rand.Int()), Name: "x", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, "h")
				s.Close()
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
