package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dockfleet/dockfleet/internal/api"
)

// sqlStore is the one implementation of Store, over database/sql, that
// SQLite and Postgres share: the queries are written once, in SQL both
// engines run, with ? placeholders; the dialect holds what differs.
type sqlStore struct {
	sqlDB *sql.DB
	db    dbtx
	d     *dialect
	// beatDB is the pool of the replicas' own heartbeats, the leader
	// lease and each replica's record: on PostgreSQL a pool of its own,
	// so that they are renewed in time however busy the fleet keeps the
	// main one (thousands of agents enrolling fill it with transactions
	// waiting for their turn, and a replica late to renew is taken for
	// dead).
	beatDB *sql.DB
	// auditSink, if set, gets every audit record written, once committed.
	auditSink func(api.AuditRecord)
}

func newSQLStore(db *sql.DB, d *dialect) sqlStore {
	return sqlStore{sqlDB: db, db: dbtx{r: db, d: d}, d: d, beatDB: db}
}

// dialect is what differs between the engines, and nothing else.
type dialect struct {
	goose      goose.Dialect
	migrations embed.FS
	dir        string
	// dollar numbers the placeholders ($1, $2…), as PostgreSQL wants;
	// without it a query runs as written, with no rewriting at all.
	dollar bool
	// txOptions begin every transaction, but blindTxOptions those of
	// blindTx; nil is the driver's default.
	txOptions, blindTxOptions *sql.TxOptions
	// greatest is the function of the larger of two values.
	greatest string
	// rolloutRevisions is the SQL of rollout o's from and to revisions, out
	// of its JSON data.
	rolloutRevisions string
	// lockEvents, if set, runs in a transaction before it inserts events.
	lockEvents string
	// lockTable, if set, is the statement (with %s for the table) that
	// makes a transaction wait for the others writing a table before it
	// reads anything (see dbtx.serialize).
	lockTable string
	// now, if set, is the query of the database server's time in Unix
	// nanoseconds (storeNow); without it the store's time is this process's.
	now string

	// Queries made from the above once, when the dialect is.
	updateNodeStatuses, pruneRevisions string
	// bound caches the queries with numbered placeholders.
	bound sync.Map
}

func newDialect(d *dialect) *dialect {
	// A revoked node stays revoked, whatever a status written from memory
	// just before the revocation says.
	d.updateNodeStatuses = `UPDATE nodes SET state = CASE state WHEN 'revoked' THEN state ELSE ? END,
			error = ?, facts = coalesce(?, facts), last_seen = ` + d.greatest + `(last_seen, ?), version = version + 1 WHERE id = ?`
	// Revision numbers count up from 1 without gaps but for pruned ones,
	// so the keep newest are the numbers above revision - keep.
	d.pruneRevisions = `DELETE FROM revisions WHERE EXISTS (SELECT 1 FROM deployments d
			WHERE d.project = revisions.project AND d.name = revisions.deployment
			AND revisions.number <= d.revision - ? AND revisions.number <> d.stable_revision)
		AND NOT EXISTS (SELECT 1 FROM instances i
			WHERE i.project = revisions.project AND i.deployment = revisions.deployment AND i.revision = revisions.number)
		AND NOT EXISTS (SELECT 1 FROM rollouts o
			WHERE o.project = revisions.project AND o.deployment = revisions.deployment AND o.state IN (?, ?)
			AND revisions.number IN (` + d.rolloutRevisions + `))`
	return d
}

// maxCachedQuery is the longest query bind caches.
const maxCachedQuery = 2048

// bind returns query in the dialect's placeholders.
func (d *dialect) bind(query string) string {
	if !d.dollar {
		return query
	}
	if q, ok := d.bound.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	n, quoted := 0, false
	for _, c := range query {
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	q := b.String()
	// Bulk writes (execRows) and IN lists make queries of many lengths;
	// caching them all would grow without end.
	if len(query) <= maxCachedQuery {
		d.bound.Store(query, q)
	}
	return q
}

// dbtx runs statements on the database or in a transaction, binding their
// placeholders for the dialect.
type dbtx struct {
	r interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
		PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	}
	d *dialect
	// wrote, in a transaction, records that it executed a statement (a
	// write): only then does it write its request's audit record. Outside
	// one it is nil.
	wrote *bool
}

// errAuditedAutocommit is a bug: a write of an API request made outside a
// transaction, where its audit record cannot go with it.
var errAuditedAutocommit = errors.New("store: an audited write outside a transaction")

func (x dbtx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if x.wrote != nil {
		*x.wrote = true
	} else if AuditOf(ctx) != nil {
		return nil, errAuditedAutocommit
	}
	return x.r.ExecContext(ctx, x.d.bind(query), args...)
}

func (x dbtx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return x.r.QueryContext(ctx, x.d.bind(query), args...)
}

func (x dbtx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return x.r.QueryRowContext(ctx, x.d.bind(query), args...)
}

func (x dbtx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return x.r.PrepareContext(ctx, x.d.bind(query))
}

// serialize, as the first statement of a transaction, makes it wait for
// the transactions writing table and holds off others until it ends. It
// is for the writers that would otherwise lose serialization races over
// and over, and fail after their last attempt: those of a row every one
// updates (an enrollment token's use count) and those of many rows at once
// (the batches of node statuses and heartbeat times: two batches of 2,000
// nodes each, run side by side, failed 12 times in 40 and took 2m20s
// without it, and took 6.5s with it). On PostgreSQL it takes a table lock
// before the transaction's snapshot (a transaction takes that at its first
// query, not at LOCK TABLE), so no concurrent write to the table can
// conflict with it; SQLite has one writer at a time anyway.
func (x dbtx) serialize(ctx context.Context, table string) error {
	if x.d.lockTable == "" {
		return nil
	}
	_, err := x.r.ExecContext(ctx, fmt.Sprintf(x.d.lockTable, table))
	return err
}

// migrate brings the database to the newest schema this binary knows, and
// refuses a database a newer binary migrated beyond it: its schema is not
// one this code can read or write correctly.
func migrate(ctx context.Context, db *sql.DB, d *dialect, opts []goose.ProviderOption) error {
	sub, err := fs.Sub(d.migrations, d.dir)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(d.goose, db, sub, opts...)
	if err != nil {
		return err
	}
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	sources := p.ListSources()
	if known := sources[len(sources)-1].Version; current > known {
		return fmt.Errorf("the database is at schema version %d; this dockfleet knows up to %d: "+
			"run a newer dockfleet (or restore a backup made by this version)", current, known)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrating the schema: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *sqlStore) Close() error {
	if s.beatDB != s.sqlDB {
		s.beatDB.Close()
	}
	return s.sqlDB.Close()
}

// maxTxAttempts bounds how often tx runs a transaction that lost a
// serialization race.
const maxTxAttempts = 10

// tx runs f in a transaction and commits it if f returns nil. A transaction
// that lost a race with another (PostgreSQL's serialization failures and
// deadlocks) runs again from the start, after a short random pause, so f
// must keep nothing from an earlier attempt: it starts from its arguments
// each time.
func (s *sqlStore) tx(ctx context.Context, f func(tx dbtx) error) error {
	return s.txOn(ctx, s.sqlDB, s.d.txOptions, f)
}

// blindTx is tx for the fleet's bookkeeping, writes that read nothing
// they depend on (heartbeat times, node states, which replica holds which
// stream), under the lock of their table where order matters: on
// PostgreSQL they run at READ COMMITTED, as a serializable transaction of
// thousands of rows would lose nearly every race with the enrollments
// reading the same table. (A fence checked there sees the lease as last
// committed, not as of the commit; these writes are not fenced.)
func (s *sqlStore) blindTx(ctx context.Context, f func(tx dbtx) error) error {
	return s.txOn(ctx, s.sqlDB, s.d.blindTxOptions, f)
}

// txOn is tx on the pool db, begun with opts.
func (s *sqlStore) txOn(ctx context.Context, db *sql.DB, opts *sql.TxOptions, f func(tx dbtx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tx1(ctx, db, opts, f)
		if err == nil || !isRetryable(err) {
			return err
		}
		if attempt == maxTxAttempts {
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		// Full jitter over a doubling window: 2, 4, 8… ms, at most 100.
		t := time.NewTimer(rand.N(min(time.Millisecond<<attempt, 100*time.Millisecond)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *sqlStore) tx1(ctx context.Context, db *sql.DB, opts *sql.TxOptions, f func(tx dbtx) error) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	wrote := false
	x := dbtx{r: tx, d: s.d, wrote: &wrote}
	// The fence is checked last, in the transaction: f's first statement
	// may need to come first (serialize), and the check holds until the
	// commit either way.
	if err := f(x); err != nil {
		tx.Rollback()
		return err
	}
	if err := checkFence(ctx, x); err != nil {
		tx.Rollback()
		return err
	}
	e := AuditOf(ctx)
	audited := e != nil && wrote
	var rec api.AuditRecord
	if audited {
		var err error
		if rec, err = appendAudit(ctx, x, e.Record(auditResultOK)); err != nil {
			tx.Rollback()
			if isRetryable(err) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrAuditUnavailable, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if audited {
		e.commit()
		s.sinkAudit(rec)
	}
	return nil
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

// boolInt is b as the 0 or 1 both engines store a flag as.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// IsFull reports whether err says the store's disk is full (SQLite's
// "database or disk is full", PostgreSQL's disk_full): writes fail until
// it has room. Reads go on, and a failed write changed nothing (the
// engine rolls it back).
func IsFull(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_FULL || pgCode(err) == "53100"
}

// isUnique reports whether err is a unique or primary key violation.
func isUnique(err error) bool {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return pgCode(err) == "23505"
}

// isRetryable reports whether err is PostgreSQL's word that the
// transaction lost a race (serialization_failure, deadlock_detected) and
// would succeed if run again.
func isRetryable(err error) bool {
	return slices.Contains([]string{"40001", "40P01"}, pgCode(err))
}

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
func (s *sqlStore) CreateEnrollToken(ctx context.Context, t api.EnrollToken, secretHash string) error {
	agentLabels := t.AgentLabels
	if agentLabels == nil {
		agentLabels = []string{}
	}
	return s.tx(ctx, func(tx dbtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO enroll_tokens (id, secret_hash, labels, expires_at, max_uses, uses, revoked, created_at, node, agent_labels)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, secretHash, toJSON(t.Labels), nanos(t.ExpiresAt), t.MaxUses, t.Uses, boolInt(t.Revoked), nanos(t.CreatedAt), t.Node, toJSON(agentLabels))
		if isUnique(err) {
			return fmt.Errorf("enrollment token %s: %w", t.ID, ErrExists)
		}
		return err
	})
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

func (s *sqlStore) ListEnrollTokens(ctx context.Context) ([]api.EnrollToken, error) {
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

func (s *sqlStore) RevokeEnrollToken(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET revoked = 1 WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("enrollment token %s: %w", id, ErrNotFound)
		}
		return nil
	})
}

func (s *sqlStore) Enroll(ctx context.Context, tokenID string, check func(api.EnrollToken, string, *api.Node) error, n api.Node) (api.Node, error) {
	var out api.Node
	err := s.tx(ctx, func(tx dbtx) error {
		if err := tx.serialize(ctx, "enroll_tokens"); err != nil {
			return err
		}
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
			if errors.Is(err, ErrEnrolledAlready) && existing != nil {
				out = *existing
				return nil
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?`, tokenID); err != nil {
			return err
		}
		if t.Node == "" {
			out = n
			out.Version = 1
			return insertNode(ctx, tx, out)
		}
		if existing == nil || existing.Name != t.Node {
			return fmt.Errorf("node %q: %w", t.Node, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET epoch = epoch + 1, facts = ?, version = version + 1 WHERE id = ?`,
			toJSON(n.Facts), existing.ID); err != nil {
			return err
		}
		out = *existing
		out.Epoch++
		out.Version++
		return nil
	})
	if err != nil {
		return n, err
	}
	return out, nil
}

func insertNode(ctx context.Context, tx dbtx, n api.Node) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO nodes (id, name, labels, state, last_seen, error, facts, usage, created_at, version, key_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		n.ID, n.Name, toJSON(n.Labels), n.State, nanos(n.LastSeen), n.Error, toJSON(n.Facts), toJSON(n.Usage), nanos(n.CreatedAt), n.Version, n.KeyID)
	if isUnique(err) {
		return fmt.Errorf("node %q: %w", n.Name, ErrExists)
	}
	return err
}

const nodeCols = `id, name, labels, state, last_seen, error, facts, usage, created_at, version, epoch, scheduling, key_id`

func scanNode(row interface{ Scan(...any) error }) (api.Node, error) {
	var (
		n                    api.Node
		labels, facts, usage string
		lastSeen, created    int64
	)
	if err := row.Scan(&n.ID, &n.Name, &labels, &n.State, &lastSeen, &n.Error, &facts, &usage, &created, &n.Version, &n.Epoch, &n.Scheduling, &n.KeyID); err != nil {
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

func (s *sqlStore) GetNode(ctx context.Context, id string) (api.Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	return n, err
}

func (s *sqlStore) ListNodes(ctx context.Context) ([]api.Node, error) {
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

// errNoRow ends a transaction whose update matched no row.
var errNoRow = errors.New("store: no row matched")

func (s *sqlStore) UpdateNode(ctx context.Context, n api.Node) (api.Node, error) {
	// A write that matched no row is rolled back (errNoRow), so that it
	// leaves no audit record of a change that was not made.
	err := s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE nodes SET name = ?, labels = ?, state = ?, last_seen = ?, error = ?, facts = ?, usage = ?, version = version + 1
		WHERE id = ? AND version = ?`,
			n.Name, toJSON(n.Labels), n.State, nanos(n.LastSeen), n.Error, toJSON(n.Facts), toJSON(n.Usage), n.ID, n.Version)
		if err == nil {
			if k, _ := res.RowsAffected(); k == 0 {
				return errNoRow
			}
		}
		return err
	})
	if isUnique(err) {
		return n, fmt.Errorf("node %q: %w", n.Name, ErrExists)
	}
	if err != nil && !errors.Is(err, errNoRow) {
		return n, err
	}
	if err != nil {
		if _, err := s.GetNode(ctx, n.ID); err != nil {
			return n, err
		}
		return n, fmt.Errorf("node %s: %w", n.ID, ErrConflict)
	}
	n.Version++
	return n, nil
}

func (s *sqlStore) RevokeNode(ctx context.Context, id, reason string, at time.Time) (api.Node, error) {
	var n api.Node
	err := s.tx(ctx, func(tx dbtx) error {
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

func (s *sqlStore) SetNodeScheduling(ctx context.Context, id string, from []api.NodeScheduling, to api.NodeScheduling) (api.Node, error) {
	var n api.Node
	err := s.tx(ctx, func(tx dbtx) error {
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

func (s *sqlStore) DeleteNode(ctx context.Context, id, reason string, at time.Time) error {
	return s.tx(ctx, func(tx dbtx) error {
		if _, err := revokeNode(ctx, tx, id, reason, at); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM instances WHERE node_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM node_certs WHERE node_id = ?`, id); err != nil {
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
func revokeNode(ctx context.Context, tx dbtx, id, reason string, at time.Time) (api.Node, error) {
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

func (s *sqlStore) ListRevokedNodes(ctx context.Context) ([]RevokedNode, error) {
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

func (s *sqlStore) SetSeen(ctx context.Context, seen map[string]Seen) error {
	if len(seen) == 0 {
		return nil
	}
	var timesOnly, withUsage []any
	for id, x := range seen {
		if x.Usage == nil {
			timesOnly = append(timesOnly, id, nanos(x.At))
		} else {
			withUsage = append(withUsage, id, nanos(x.At), toJSON(*x.Usage))
		}
	}
	return s.blindTx(ctx, func(tx dbtx) error {
		if err := tx.serialize(ctx, "nodes"); err != nil {
			return err
		}
		// last_seen and usage are bookkeeping, not a state change: they do
		// not bump version, so a batched flush never makes a concurrent
		// label edit conflict. Of several replicas, the leader writes when
		// it last heard of a node through another, and the one holding
		// its stream the usage: a time older than the stored one is kept
		// out, not the usage with it. A statement writes seenBatch nodes:
		// one a node, the flush of 40,000 was most of an idle leader's
		// work.
		if err := updateFromValues(ctx, tx, timesOnly, "(?, CAST(? AS BIGINT))",
			`UPDATE nodes SET last_seen = v.column2 FROM (VALUES %s) AS v WHERE nodes.id = v.column1 AND nodes.last_seen < v.column2`); err != nil {
			return err
		}
		return updateFromValues(ctx, tx, withUsage, "(?, CAST(? AS BIGINT), ?)",
			`UPDATE nodes SET last_seen = CASE WHEN nodes.last_seen < v.column2 THEN v.column2 ELSE nodes.last_seen END, usage = v.column3
			FROM (VALUES %s) AS v WHERE nodes.id = v.column1`)
	})
}

// seenBatch is how many rows one statement of SetSeen writes, far under
// both engines' limits on parameters.
const seenBatch = 500

// updateFromValues runs query, whose %s takes a VALUES list, over args in
// batches of seenBatch rows of the form row.
func updateFromValues(ctx context.Context, tx dbtx, args []any, row, query string) error {
	per := strings.Count(row, "?")
	for len(args) > 0 {
		n := min(len(args)/per, seenBatch)
		rows := strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(query, rows), args[:n*per]...); err != nil {
			return err
		}
		args = args[n*per:]
	}
	return nil
}

func (s *sqlStore) UpdateNodeStatuses(ctx context.Context, ss []NodeStatus) error {
	if len(ss) == 0 {
		return nil
	}
	return s.blindTx(ctx, func(tx dbtx) error {
		if err := tx.serialize(ctx, "nodes"); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, s.d.updateNodeStatuses)
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

func (s *sqlStore) GetDeployment(ctx context.Context, project, name string) (api.Deployment, error) {
	d, err := scanDeployment(s.db.QueryRowContext(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE project = ? AND name = ?`, project, name))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("deployment %s/%s: %w", project, name, ErrNotFound)
	}
	return d, err
}

func (s *sqlStore) ListDeployments(ctx context.Context, project string) ([]api.Deployment, error) {
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

func (s *sqlStore) PutDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	var out api.Deployment
	err := s.tx(ctx, func(tx dbtx) error {
		var err error
		out, err = putDeployment(ctx, tx, d)
		return err
	})
	return out, err
}

func putDeployment(ctx context.Context, tx dbtx, d api.Deployment) (api.Deployment, error) {
	if d.Version == 0 {
		_, err := tx.ExecContext(ctx, `INSERT INTO deployments (`+deploymentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, 1)`,
			d.Project, d.Name, d.Revision, d.StableRevision, toJSON(d.Spec), nanos(d.CreatedAt), nanos(d.UpdatedAt))
		if isUnique(err) {
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

func (s *sqlStore) DeleteDeployment(ctx context.Context, project, name string) error {
	return s.tx(ctx, func(tx dbtx) error {
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

func (s *sqlStore) ListInstances(ctx context.Context, f InstanceFilter) ([]api.Instance, error) {
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

func (s *sqlStore) ApplyPlacement(ctx context.Context, add []api.Instance, remove []string) error {
	if len(add) == 0 && len(remove) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx dbtx) error {
		ids := make([]any, len(remove))
		for i, id := range remove {
			ids[i] = id
		}
		if err := execRows(ctx, tx, `DELETE FROM instances WHERE id IN `, nil, 1, ids, ""); err != nil {
			return err
		}
		rows := make([]any, 0, 14*len(add))
		for _, i := range add {
			rows = append(rows, i.ID, i.Project, i.Deployment, i.NodeID, i.Revision, i.SpecHash, i.State, i.Reason, i.ContainerID, i.ImageDigest,
				nanos(i.CreatedAt), nanos(i.UpdatedAt), 1, i.Restarts)
		}
		err := execRows(ctx, tx, `INSERT INTO instances (`+instanceCols+`) VALUES `, nil, 14, rows, "")
		if isUnique(err) {
			return fmt.Errorf("placing %d instances: one of their IDs is taken: %w", len(add), ErrExists)
		}
		if err != nil {
			return err
		}
		return bumpStateSeq(ctx, tx)
	})
}

// maxRowArgs bounds the arguments of one statement of execRows: well
// under SQLite's limit on a statement's parameters (32,766) and
// PostgreSQL's (65,535).
const maxRowArgs = 8000

// execRows runs head + "(?, ?, …), (…)" + tail for rows, cols arguments
// each, in as few statements as maxRowArgs allows; headArgs are those of
// head's placeholders. With cols 1 and head ending in "IN ", the rows make
// an IN list. A statement per row cost a 40,000-instance rollout on
// PostgreSQL most of its fan-out: 40,000 round trips each for the
// placement, the batch's moves and the desired states, most of a minute
// each on a loaded machine.
func execRows(ctx context.Context, tx dbtx, head string, headArgs []any, cols int, rows []any, tail string) error {
	tuple, sep := "(?"+strings.Repeat(", ?", cols-1)+")", ", "
	list := cols == 1 && strings.HasSuffix(head, "IN ")
	if list {
		tuple = "?"
	}
	per := max(maxRowArgs/cols, 1) * cols
	for len(rows) > 0 {
		batch := rows[:min(per, len(rows))]
		rows = rows[len(batch):]
		var b strings.Builder
		b.WriteString(head)
		if list {
			b.WriteString("(")
		}
		b.WriteString(tuple + strings.Repeat(sep+tuple, len(batch)/cols-1))
		if list {
			b.WriteString(")")
		}
		b.WriteString(tail)
		if _, err := tx.ExecContext(ctx, b.String(), append(slices.Clip(headArgs), batch...)...); err != nil {
			return err
		}
	}
	return nil
}

func (s *sqlStore) UpdateInstanceStatus(ctx context.Context, st InstanceStatus) error {
	ok, err := s.UpdateInstanceStatuses(ctx, []InstanceStatus{st})
	if err == nil && !ok[0] {
		err = fmt.Errorf("instance %s: %w", st.ID, ErrNotFound)
	}
	return err
}

// staleStatusWindow is how much older than the recorded status a status
// may be observed and still be taken for a late one, ignored: an agent
// reports an instance's changes seconds apart, and a status handed from
// one leader to the next arrives after those sent straight to the next.
// One observed longer before is taken for a clock set back, and recorded.
const staleStatusWindow = 10 * time.Minute

func (s *sqlStore) UpdateInstanceStatuses(ctx context.Context, ss []InstanceStatus) ([]bool, error) {
	matched := make([]bool, len(ss))
	err := s.tx(ctx, func(tx dbtx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE instances SET state = ?, reason = ?, container_id = ?, image_digest = ?, restarts = ?, updated_at = ?,
				observed_at = ?, version = version + 1
			WHERE id = ? AND node_id = ? AND (? = '' OR spec_hash = ?) AND (observed_at <= ? OR observed_at > ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, st := range ss {
			at := nanos(st.At)
			res, err := stmt.ExecContext(ctx, st.State, st.Reason, st.ContainerID, st.ImageDigest, st.Restarts, at, at,
				st.ID, st.NodeID, st.SpecHash, st.SpecHash, at, at+int64(staleStatusWindow))
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

func (s *sqlStore) SetInstanceRevision(ctx context.Context, ids []string, revision int64, specHash string) error {
	if len(ids) == 0 {
		return nil
	}
	now := nanos(time.Now())
	return s.tx(ctx, func(tx dbtx) error {
		for _, id := range ids {
			_, err := tx.ExecContext(ctx, `UPDATE instances SET revision = ?, spec_hash = ?, state = ?, reason = '', updated_at = ?, observed_at = 0, version = version + 1 WHERE id = ?`,
				revision, specHash, api.InstancePending, now, id)
			if err != nil {
				return err
			}
		}
		return bumpStateSeq(ctx, tx)
	})
}
