package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Backup is what BackupSQLite copied.
type Backup struct {
	// Path is the backup file.
	Path string
	// Bytes is its size.
	Bytes int64
	// SchemaVersion is the newest migration the copied store has.
	SchemaVersion int64
	// StateSeq is the copied store's state sequence.
	StateSeq uint64
}

// BackupSQLite copies the SQLite store at dbPath to out: a consistent
// snapshot (SQLite's VACUUM INTO reads it in one read transaction), taken
// while a server writes to it, from this process; WAL lets the reader and
// the writer run side by side. The copy is made private (0600) in a
// private directory beside out, synced, and only then given its name, so
// out never holds half a backup. An existing out is an error unless
// overwrite is set; a dbPath that is not a dockfleet store is one too, and
// either leaves nothing behind.
func BackupSQLite(ctx context.Context, dbPath, out string, overwrite bool) (Backup, error) {
	b := Backup{Path: out}
	if _, err := os.Stat(dbPath); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return b, fmt.Errorf("no store at %s: is it the server's data directory?", dbPath)
		}
		return b, fmt.Errorf("reading store %s: %w", dbPath, err)
	}
	dir := filepath.Dir(out)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return b, fmt.Errorf("backup directory %s does not exist: create it first or choose another --out", dir)
	}
	if _, err := os.Lstat(out); err == nil && !overwrite {
		return b, fmt.Errorf("%s exists: choose another --out, or pass --force to replace it", out)
	}
	abs, err := filepath.Abs(dbPath)
	if err != nil {
		return b, fmt.Errorf("reading store %s: %w", dbPath, err)
	}
	// mode=rw: a store that is not there is not created. No journal mode
	// is set: the server's WAL is the file's own, and this connection only
	// reads.
	q := url.Values{}
	q.Set("mode", "rw")
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+abs+"?"+q.Encode())
	if err != nil {
		return b, fmt.Errorf("opening store %s: %w", dbPath, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if b.SchemaVersion, err = schemaVersion(ctx, db); err != nil {
		return b, fmt.Errorf("%s is not a dockfleet store: %w", dbPath, err)
	}

	tmpDir, err := os.MkdirTemp(dir, ".dockfleet-backup-*") // 0700: the copy is never readable by others
	if err != nil {
		return b, fmt.Errorf("writing backup %s: %w", out, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "dockfleet.db")
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return b, fmt.Errorf("copying store %s: %w", dbPath, err)
	}
	if b.StateSeq, b.Bytes, err = finishCopy(ctx, tmp); err != nil {
		return b, fmt.Errorf("writing backup %s: %w", out, err)
	}
	if err := place(tmp, out, overwrite); err != nil {
		return b, fmt.Errorf("writing backup %s: %w", out, err)
	}
	return b, nil
}

// schemaVersion is the newest migration goose applied to db.
func schemaVersion(ctx context.Context, db *sql.DB) (int64, error) {
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version_id) FROM goose_db_version WHERE is_applied`).Scan(&v); err != nil {
		return 0, err
	}
	if !v.Valid {
		return 0, errors.New("it has no migrations applied")
	}
	return v.Int64, nil
}

// finishCopy makes the copy at path private and durable, and reads its
// state sequence (0 for a store older than it) and size.
//
// The copy is born held (StateSeq.Held): a server restored from it sends
// its sequence as it is now, from its first pass on, until the operator
// accepts the restore. Otherwise the writes a restored server makes before
// the first agent reports (placement, rollout steps) could raise its
// sequence to that of agents ahead of it, and they would apply a state
// that removes what they run, with nobody having decided.
func finishCopy(ctx context.Context, path string) (uint64, int64, error) {
	if err := os.Chmod(path, 0o600); err != nil {
		return 0, 0, err
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(DELETE)") // one file, nothing beside it to lose
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return 0, 0, err
	}
	var seq uint64
	err = db.QueryRowContext(ctx, `UPDATE state_seq SET held = CASE held WHEN 0 THEN seq ELSE held END WHERE id = 1 RETURNING seq`).Scan(&seq)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) && !isNoTable(err) {
		return 0, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	return seq, fi.Size(), nil
}

// isNoTable reports SQLite's "no such table": a store from before a migration.
func isNoTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such table")
}

// place gives the finished copy tmp its name out, durably: a link refuses
// an out made since it was checked, unless overwrite, where a rename
// replaces it.
func place(tmp, out string, overwrite bool) error {
	if overwrite {
		if err := os.Rename(tmp, out); err != nil {
			return err
		}
	} else if err := os.Link(tmp, out); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s appeared meanwhile: choose another --out, or pass --force to replace it", out)
		}
		return err
	}
	d, err := os.Open(filepath.Dir(out))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
