package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/audit"
)

// ErrAuditUnavailable is what a write returns when its audit record could
// not be written: the write was rolled back with it (Vault's rule: no
// change the log does not show).
var ErrAuditUnavailable = errors.New("store: the audit log cannot be written")

// AuditEntry is the audit record of one API request, carried by its
// context (WithAudit). Every transaction of the request that writes
// something writes the record in it, as it then stands, before it commits:
// a change and its record are committed together or not at all. The
// request's handler may fill in the target as it learns it.
type AuditEntry struct {
	mu        sync.Mutex
	rec       api.AuditRecord
	committed int
}

// NewAuditEntry starts the audit record rec of a request.
func NewAuditEntry(rec api.AuditRecord) *AuditEntry { return &AuditEntry{rec: rec} }

type auditKey struct{}

// WithAudit returns ctx carrying e: the transactions that write under it
// write e's record too.
func WithAudit(ctx context.Context, e *AuditEntry) context.Context {
	return context.WithValue(ctx, auditKey{}, e)
}

// AuditOf returns the audit entry ctx carries, nil if none.
func AuditOf(ctx context.Context) *AuditEntry {
	e, _ := ctx.Value(auditKey{}).(*AuditEntry)
	return e
}

// SetTarget names what the request changes (a deployment, a node, a user).
func (e *AuditEntry) SetTarget(project, target string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rec.Project, e.rec.Target = project, target
}

// SetActor names who made the request, once it is known.
func (e *AuditEntry) SetActor(actor string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rec.Actor = actor
}

// Committed reports how many of the request's transactions committed a
// change with its record.
func (e *AuditEntry) Committed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.committed
}

// Record returns the record as it stands, with result.
func (e *AuditEntry) Record(result string) api.AuditRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.rec
	r.Result = result
	return r
}

func (e *AuditEntry) commit() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.committed++
}

// auditResultOK is the result of a record written with its change.
const auditResultOK = "ok"

// appendAudit appends r to the chain in tx: after the head, which it moves
// on. On PostgreSQL two requests reading the same head conflict on its row,
// and the one that loses runs again (tx), so the chain never forks.
func appendAudit(ctx context.Context, tx dbtx, r api.AuditRecord) (api.AuditRecord, error) {
	var head audit.Head
	if err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&head.Seq, &head.Hash); err != nil {
		return r, err
	}
	r.Seq, r.PrevHash = head.Seq+1, head.Hash
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	// Stored to the nanosecond, as it is hashed.
	r.Time = fromNanos(nanos(r.Time))
	r.Hash = audit.Hash(r)
	// The head moves first: a request that read the same head waits on its
	// row and then fails to serialize (and runs again), rather than
	// colliding on the record's number.
	if _, err := tx.r.ExecContext(ctx, tx.d.bind(`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`), r.Seq, r.Hash); err != nil {
		return r, err
	}
	_, err := tx.r.ExecContext(ctx, tx.d.bind(`INSERT INTO audit (seq, at, actor, action, target, project, source, result, request_id, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.Seq, nanos(r.Time), r.Actor, r.Action, r.Target, r.Project, r.Source, r.Result, r.RequestID, r.PrevHash, r.Hash)
	return r, err
}

// SetAuditSink passes every audit record this store writes, once
// committed, to sink: a copy for a SIEM (a JSON-lines file). The store's
// log stays the record of truth; a sink that fails loses its copy only.
// Set it before the store is used.
func (s *sqlStore) SetAuditSink(sink func(api.AuditRecord)) { s.auditSink = sink }

// sinkAudit hands committed record r to the sink, if any.
func (s *sqlStore) sinkAudit(r api.AuditRecord) {
	if s.auditSink != nil {
		s.auditSink(r)
	}
}

// AppendAudit writes a record of a request that changed nothing (a
// refused one, a failed login), in a transaction of its own.
func (s *sqlStore) AppendAudit(ctx context.Context, r api.AuditRecord) error {
	var written api.AuditRecord
	err := s.txOn(context.WithValue(ctx, auditKey{}, (*AuditEntry)(nil)), s.sqlDB, s.d.txOptions, func(tx dbtx) error {
		var err error
		written, err = appendAudit(ctx, tx, r)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAuditUnavailable, err)
	}
	s.sinkAudit(written)
	return nil
}

// AuditFilter selects audit records; zero fields select all.
type AuditFilter struct {
	Since time.Time
	// Actor is a user: its records, and its tokens' (whose records name
	// their owner in brackets).
	Actor string
	// AfterSeq starts after this record; Limit bounds the answer (0: all).
	AfterSeq int64
	Limit    int
}

const auditCols = `seq, at, actor, action, target, project, source, result, request_id, prev_hash, hash`

// ListAudit lists audit records in sequence order.
func (s *sqlStore) ListAudit(ctx context.Context, f AuditFilter) ([]api.AuditRecord, error) {
	q := `SELECT ` + auditCols + ` FROM audit WHERE seq > ? AND at >= ?`
	args := []any{f.AfterSeq, nanos(f.Since)}
	if f.Actor != "" {
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(f.Actor)
		q += ` AND (actor = ? OR actor LIKE ? ESCAPE '\')`
		args = append(args, "user:"+f.Actor, "% ("+esc+")")
	}
	q += ` ORDER BY seq`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.AuditRecord
	for rows.Next() {
		var (
			r  api.AuditRecord
			at int64
		)
		if err := rows.Scan(&r.Seq, &at, &r.Actor, &r.Action, &r.Target, &r.Project, &r.Source, &r.Result, &r.RequestID, &r.PrevHash, &r.Hash); err != nil {
			return nil, err
		}
		r.Time = fromNanos(at)
		out = append(out, r)
	}
	return out, rows.Err()
}

// AuditHead returns the newest record's sequence number and hash.
func (s *sqlStore) AuditHead(ctx context.Context) (audit.Head, error) {
	var h audit.Head
	err := s.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return h, nil
	}
	return h, err
}
