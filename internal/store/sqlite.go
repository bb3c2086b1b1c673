package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the pure-Go driver keeps the binary static
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// maxConns bounds the SQLite connections one server opens.
const maxConns = 8

// sqliteDialect is SQLite's: its ? placeholders as written, and
// immediate transactions (the _txlock of the DSN) that serialise writers.
var sqliteDialect = newDialect(&dialect{
	goose:      goose.DialectSQLite3,
	migrations: sqliteMigrations,
	dir:        "migrations/sqlite",
	greatest:   "max",
	// Nothing to do: writers are serialised, so sequence numbers become
	// visible in order.
	lockEvents:       "",
	rolloutRevisions: `json_extract(o.data, '$.fromRevision'), json_extract(o.data, '$.toRevision')`,
})

// SQLite is the embedded store: one file in the server's data directory.
type SQLite struct {
	sqlStore
	path string
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the database at path and migrates it
// to the newest schema.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	// The store holds every spec, environment included: it is its owner's
	// only. SQLite gives the -wal and -shm files the mode of the database
	// file, so making that one first, private, covers all three.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(abs, 0o600); err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	// WAL lets readers run beside the writer; immediate transactions take the
	// write lock up front, so two writers wait on busy_timeout instead of
	// failing a lock upgrade halfway through.
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+abs+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	// A bounded pool: callers wait for a connection rather than open one
	// each. Thousands of agents reconnecting at once would otherwise open
	// thousands of SQLite connections, run out of file descriptors and
	// fail on the write lock. SQLite has one writer anyway; WAL lets the
	// few readers run beside it.
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := migrate(ctx, db, sqliteDialect, nil); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return &SQLite{sqlStore: newSQLStore(db, sqliteDialect), path: abs}, nil
}

// Path is the absolute path of the database file.
func (s *SQLite) Path() string { return s.path }
