package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite" // the pure-Go driver keeps the binary static
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dockfleet/dockfleet/internal/api"
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// maxConns bounds the SQLite connections one server opens.
const maxConns = 8

// SQLite is the embedded store: one file in the server's data directory.
type SQLite struct {
	db *sql.DB
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
	if err := migrate(ctx, db, goose.DialectSQLite3, sqliteMigrations, "migrations/sqlite"); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating store %s: %w", path, err)
	}
	return &SQLite{db: db}, nil
}

func migrate(ctx context.Context, db *sql.DB, dialect goose.Dialect, migrations embed.FS, dir string) error {
	sub, err := fs.Sub(migrations, dir)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(dialect, db, sub)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// tx runs f in a transaction and commits it if f returns nil.
func (s *SQLite) tx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own plain structs and maps reach here.
		return "null"
	}
	return string(b)
}

// IsFull reports whether err is SQLite's "database or disk is full": the
// disk of the store has no room left, and writes fail until it has. Reads
// go on, and a failed write changed nothing (SQLite rolls it back).
func IsFull(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_FULL
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func (s *SQLite) CreateAPIToken(ctx context.Context, id, name, secretHash string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_tokens (id, name, secret_hash, created_at) VALUES (?, ?, ?, ?)`,
		id, name, secretHash, nanos(time.Now()))
	if isUnique(err) {
		return fmt.Errorf("api token %s: %w", id, ErrExists)
	}
	return err
}

func (s *SQLite) APITokenHash(ctx context.Context, id string) (string, error) {
	var h string
	err := s.db.QueryRowContext(ctx, `SELECT secret_hash FROM api_tokens WHERE id = ?`, id).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("api token %s: %w", id, ErrNotFound)
	}
	return h, err
}

func (s *SQLite) CreateEnrollToken(ctx context.Context, t api.EnrollToken, secretHash string) error {
	agentLabels := t.AgentLabels
	if agentLabels == nil {
		agentLabels = []string{}
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO enroll_tokens (id, secret_hash, labels, expires_at, max_uses, uses, revoked, created_at, node, agent_labels)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, secretHash, toJSON(t.Labels), nanos(t.ExpiresAt), t.MaxUses, t.Uses, t.Revoked, nanos(t.CreatedAt), t.Node, toJSON(agentLabels))
	if isUnique(err) {
		return fmt.Errorf("enrollment token %s: %w", t.ID, ErrExists)
	}
	return err
}

const enrollTokenCols = `id, secret_hash, labels, expires_at, max_uses, uses, revoked, created_at, node, agent_labels`

func scanEnrollToken(row interface{ Scan(...any) error }) (api.EnrollToken, string, error) {
	var (
		t                         api.EnrollToken
		hash, labels, agentLabels string
		expires, created          int64
	)
	if err := row.Scan(&t.ID, &hash, &labels, &expires, &t.MaxUses, &t.Uses, &t.Revoked, &created, &t.Node, &agentLabels); err != nil {
		return t, "", err
	}
	if err := json.Unmarshal([]byte(labels), &t.Labels); err != nil {
		return t, "", fmt.Errorf("enrollment token %s labels: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(agentLabels), &t.AgentLabels); err != nil {
		return t, "", fmt.Errorf("enrollment token %s agent labels: %w", t.ID, err)
	}
	if len(t.AgentLabels) == 0 {
		t.AgentLabels = nil
	}
	t.ExpiresAt, t.CreatedAt = fromNanos(expires), fromNanos(created)
	return t, hash, nil
}

func (s *SQLite) ListEnrollTokens(ctx context.Context) ([]api.EnrollToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+enrollTokenCols+` FROM enroll_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.EnrollToken
	for rows.Next() {
		t, _, err := scanEnrollToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *SQLite) RevokeEnrollToken(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE enroll_tokens SET revoked = 1 WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("enrollment token %s: %w", id, ErrNotFound)
	}
	return nil
}

func (s *SQLite) Enroll(ctx context.Context, tokenID string, check func(api.EnrollToken, string, *api.Node) error, n api.Node) (api.Node, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		t, hash, err := scanEnrollToken(tx.QueryRowContext(ctx, `SELECT `+enrollTokenCols+` FROM enroll_tokens WHERE id = ?`, tokenID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("enrollment token %s: %w", tokenID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var existing *api.Node
		switch old, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM nodes WHERE name = ?`, n.Name)); {
		case err == nil:
			existing = &old
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if err := check(t, hash, existing); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?`, tokenID); err != nil {
			return err
		}
		if t.Node == "" {
			n.Version = 1
			return insertNode(ctx, tx, n)
		}
		if existing == nil || existing.Name != t.Node {
			return fmt.Errorf("node %q: %w", t.Node, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET epoch = epoch + 1, facts = ?, version = version + 1 WHERE id = ?`,
			toJSON(n.Facts), existing.ID); err != nil {
			return err
		}
		n = *existing
		n.Epoch++
		n.Version++
		return nil
	})
	return n, err
}

func insertNode(ctx context.Context, tx *sql.Tx, n api.Node) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO nodes (id, name, labels, state, last_seen, error, facts, usage, created_at, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		n.ID, n.Name, toJSON(n.Labels), n.State, nanos(n.LastSeen), n.Error, toJSON(n.Facts), toJSON(n.Usage), nanos(n.CreatedAt), n.Version)
	if isUnique(err) {
		return fmt.Errorf("node %q: %w", n.Name, ErrExists)
	}
	return err
}

const nodeCols = `id, name, labels, state, last_seen, error, facts, usage, created_at, version, epoch, scheduling`

func scanNode(row interface{ Scan(...any) error }) (api.Node, error) {
	var (
		n                    api.Node
		labels, facts, usage string
		lastSeen, created    int64
	)
	if err := row.Scan(&n.ID, &n.Name, &labels, &n.State, &lastSeen, &n.Error, &facts, &usage, &created, &n.Version, &n.Epoch, &n.Scheduling); err != nil {
		return n, err
	}
	for _, f := range []struct {
		s string
		v any
	}{{labels, &n.Labels}, {facts, &n.Facts}, {usage, &n.Usage}} {
		if err := json.Unmarshal([]byte(f.s), f.v); err != nil {
			return n, fmt.Errorf("node %s: %w", n.ID, err)
		}
	}
	n.LastSeen, n.CreatedAt = fromNanos(lastSeen), fromNanos(created)
	return n, nil
}

func (s *SQLite) GetNode(ctx context.Context, id string) (api.Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	return n, err
}

func (s *SQLite) ListNodes(ctx context.Context) ([]api.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func (s *SQLite) UpdateNode(ctx context.Context, n api.Node) (api.Node, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET name = ?, labels = ?, state = ?, last_seen = ?, error = ?, facts = ?, usage = ?, version = version + 1
		WHERE id = ? AND version = ?`,
		n.Name, toJSON(n.Labels), n.State, nanos(n.LastSeen), n.Error, toJSON(n.Facts), toJSON(n.Usage), n.ID, n.Version)
	if isUnique(err) {
		return n, fmt.Errorf("node %q: %w", n.Name, ErrExists)
	}
	if err != nil {
		return n, err
	}
	if k, _ := res.RowsAffected(); k == 0 {
		if _, err := s.GetNode(ctx, n.ID); err != nil {
			return n, err
		}
		return n, fmt.Errorf("node %s: %w", n.ID, ErrConflict)
	}
	n.Version++
	return n, nil
}

func (s *SQLite) RevokeNode(ctx context.Context, id, reason string, at time.Time) (api.Node, error) {
	var n api.Node
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if n, err = revokeNode(ctx, tx, id, reason, at); err != nil {
			return err
		}
		if n.State == api.NodeRevoked {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET state = ?, version = version + 1 WHERE id = ?`, api.NodeRevoked, id); err != nil {
			return err
		}
		n.State = api.NodeRevoked
		n.Version++
		return nil
	})
	return n, err
}

func (s *SQLite) SetNodeScheduling(ctx context.Context, id string, from []api.NodeScheduling, to api.NodeScheduling) (api.Node, error) {
	var n api.Node
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("node %s: %w", id, ErrNotFound)
		}
		if err != nil || n.Scheduling == to || len(from) > 0 && !slices.Contains(from, n.Scheduling) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET scheduling = ?, version = version + 1 WHERE id = ?`, to, id); err != nil {
			return err
		}
		n.Scheduling = to
		n.Version++
		return nil
	})
	return n, err
}

func (s *SQLite) DeleteNode(ctx context.Context, id, reason string, at time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := revokeNode(ctx, tx, id, reason, at); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM instances WHERE node_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE id = ?`, id); err != nil {
			return err
		}
		return bumpStateSeq(ctx, tx)
	})
}

// revokeNode adds node id to the revoked identities, unless it is there
// already, and returns the node as it was.
func revokeNode(ctx context.Context, tx *sql.Tx, id, reason string, at time.Time) (api.Node, error) {
	n, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return n, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO revoked_nodes (node_id, name, reason, revoked_at) VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO NOTHING`,
		id, n.Name, reason, nanos(at))
	return n, err
}

func (s *SQLite) ListRevokedNodes(ctx context.Context) ([]RevokedNode, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT node_id, name, reason, revoked_at FROM revoked_nodes ORDER BY revoked_at, node_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RevokedNode
	for rows.Next() {
		var (
			r  RevokedNode
			at int64
		)
		if err := rows.Scan(&r.ID, &r.Name, &r.Reason, &at); err != nil {
			return nil, err
		}
		r.At = fromNanos(at)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *SQLite) SetLastSeen(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		// last_seen is bookkeeping, not a state change: it does not bump version,
		// so a batched flush never makes a concurrent label edit conflict.
		stmt, err := tx.PrepareContext(ctx, `UPDATE nodes SET last_seen = ? WHERE id = ? AND last_seen < ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, t := range seen {
			if _, err := stmt.ExecContext(ctx, nanos(t), id, nanos(t)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *SQLite) UpdateNodeStatuses(ctx context.Context, ss []NodeStatus) error {
	if len(ss) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		// A revoked node stays revoked, whatever a status written
		// from memory just before the revocation says.
		stmt, err := tx.PrepareContext(ctx, `UPDATE nodes SET state = CASE state WHEN 'revoked' THEN state ELSE ? END,
			error = ?, facts = coalesce(?, facts), last_seen = max(last_seen, ?), version = version + 1 WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, st := range ss {
			var facts any // NULL keeps the stored facts
			if st.Facts != nil {
				facts = toJSON(*st.Facts)
			}
			if _, err := stmt.ExecContext(ctx, st.State, st.Error, facts, nanos(st.LastSeen), st.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

const deploymentCols = `project, name, revision, stable_revision, spec, created_at, updated_at, version`

func scanDeployment(row interface{ Scan(...any) error }) (api.Deployment, error) {
	var (
		d                api.Deployment
		spec             string
		created, updated int64
	)
	if err := row.Scan(&d.Project, &d.Name, &d.Revision, &d.StableRevision, &spec, &created, &updated, &d.Version); err != nil {
		return d, err
	}
	if err := json.Unmarshal([]byte(spec), &d.Spec); err != nil {
		return d, fmt.Errorf("deployment %s/%s spec: %w", d.Project, d.Name, err)
	}
	d.CreatedAt, d.UpdatedAt = fromNanos(created), fromNanos(updated)
	return d, nil
}

func (s *SQLite) GetDeployment(ctx context.Context, project, name string) (api.Deployment, error) {
	d, err := scanDeployment(s.db.QueryRowContext(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE project = ? AND name = ?`, project, name))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("deployment %s/%s: %w", project, name, ErrNotFound)
	}
	return d, err
}

func (s *SQLite) ListDeployments(ctx context.Context, project string) ([]api.Deployment, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE ? = '' OR project = ? ORDER BY project, name`, project, project)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *SQLite) PutDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	var out api.Deployment
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = putDeployment(ctx, tx, d)
		return err
	})
	return out, err
}

func putDeployment(ctx context.Context, tx *sql.Tx, d api.Deployment) (api.Deployment, error) {
	if d.Version == 0 {
		_, err := tx.ExecContext(ctx, `INSERT INTO deployments (`+deploymentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, 1)`,
			d.Project, d.Name, d.Revision, d.StableRevision, toJSON(d.Spec), nanos(d.CreatedAt), nanos(d.UpdatedAt))
		if isUnique(err) || (err != nil && strings.Contains(err.Error(), "PRIMARY KEY")) {
			return d, fmt.Errorf("deployment %s/%s: %w", d.Project, d.Name, ErrExists)
		}
		if err != nil {
			return d, err
		}
		d.Version = 1
		return d, nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE deployments SET revision = ?, stable_revision = ?, spec = ?, updated_at = ?, version = version + 1
		WHERE project = ? AND name = ? AND version = ?`,
		d.Revision, d.StableRevision, toJSON(d.Spec), nanos(d.UpdatedAt), d.Project, d.Name, d.Version)
	if err != nil {
		return d, err
	}
	if k, _ := res.RowsAffected(); k == 0 {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM deployments WHERE project = ? AND name = ?`, d.Project, d.Name).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return d, fmt.Errorf("deployment %s/%s: %w", d.Project, d.Name, ErrNotFound)
		}
		return d, fmt.Errorf("deployment %s/%s: %w", d.Project, d.Name, ErrConflict)
	}
	d.Version++
	return d, nil
}

func (s *SQLite) DeleteDeployment(ctx context.Context, project, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM deployments WHERE project = ? AND name = ?`, project, name)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return fmt.Errorf("deployment %s/%s: %w", project, name, ErrNotFound)
		}
		for _, table := range []string{"instances", "revisions", "rollouts"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE project = ? AND deployment = ?`, project, name); err != nil {
				return err
			}
		}
		return bumpStateSeq(ctx, tx)
	})
}

const instanceCols = `id, project, deployment, node_id, revision, spec_hash, state, reason, container_id, image_digest, created_at, updated_at, version, restarts`

func (s *SQLite) ListInstances(ctx context.Context, f InstanceFilter) ([]api.Instance, error) {
	// Only the filters given go into the query, so SQLite can use the
	// indexes on (project, deployment) and node_id.
	var where []string
	var args []any
	for _, c := range []struct{ col, val string }{{"project", f.Project}, {"deployment", f.Deployment}, {"node_id", f.NodeID}} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	q := `SELECT ` + instanceCols + ` FROM instances`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY project, deployment, created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Instance
	for rows.Next() {
		var (
			i                api.Instance
			created, updated int64
		)
		if err := rows.Scan(&i.ID, &i.Project, &i.Deployment, &i.NodeID, &i.Revision, &i.SpecHash, &i.State, &i.Reason, &i.ContainerID,
			&i.ImageDigest, &created, &updated, &i.Version, &i.Restarts); err != nil {
			return nil, err
		}
		i.CreatedAt, i.UpdatedAt = fromNanos(created), fromNanos(updated)
		out = append(out, i)
	}
	return out, rows.Err()
}

func (s *SQLite) ApplyPlacement(ctx context.Context, add []api.Instance, remove []string) error {
	if len(add) == 0 && len(remove) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range remove {
			if _, err := tx.ExecContext(ctx, `DELETE FROM instances WHERE id = ?`, id); err != nil {
				return err
			}
		}
		for _, i := range add {
			_, err := tx.ExecContext(ctx, `INSERT INTO instances (`+instanceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)`,
				i.ID, i.Project, i.Deployment, i.NodeID, i.Revision, i.SpecHash, i.State, i.Reason, i.ContainerID, i.ImageDigest, nanos(i.CreatedAt), nanos(i.UpdatedAt), i.Restarts)
			if isUnique(err) {
				return fmt.Errorf("instance %s: %w", i.ID, ErrExists)
			}
			if err != nil {
				return err
			}
		}
		return bumpStateSeq(ctx, tx)
	})
}

func (s *SQLite) UpdateInstanceStatus(ctx context.Context, st InstanceStatus) error {
	ok, err := s.UpdateInstanceStatuses(ctx, []InstanceStatus{st})
	if err == nil && !ok[0] {
		err = fmt.Errorf("instance %s: %w", st.ID, ErrNotFound)
	}
	return err
}

func (s *SQLite) UpdateInstanceStatuses(ctx context.Context, ss []InstanceStatus) ([]bool, error) {
	matched := make([]bool, len(ss))
	err := s.tx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE instances SET state = ?, reason = ?, container_id = ?, image_digest = ?, restarts = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND node_id = ? AND (? = '' OR spec_hash = ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, st := range ss {
			res, err := stmt.ExecContext(ctx, st.State, st.Reason, st.ContainerID, st.ImageDigest, st.Restarts, nanos(st.At), st.ID, st.NodeID, st.SpecHash, st.SpecHash)
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			matched[i] = k > 0
		}
		return nil
	})
	return matched, err
}

func (s *SQLite) SetInstanceRevision(ctx context.Context, ids []string, revision int64, specHash string) error {
	if len(ids) == 0 {
		return nil
	}
	now := nanos(time.Now())
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			_, err := tx.ExecContext(ctx, `UPDATE instances SET revision = ?, spec_hash = ?, state = ?, reason = '', updated_at = ?, version = version + 1 WHERE id = ?`,
				revision, specHash, api.InstancePending, now, id)
			if err != nil {
				return err
			}
		}
		return bumpStateSeq(ctx, tx)
	})
}
