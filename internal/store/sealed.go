package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Sealed is a server secret as the store holds it: encrypted by package
// seal with the key that KeyID names. The store never sees the plaintext.
type Sealed struct {
	Name  string
	KeyID string
	// Blob is what seal.Key.Seal returned.
	Blob      []byte
	CreatedAt time.Time
}

// PutSealedIfAbsent stores sec unless a secret of its name is stored
// already, and returns the one stored then: sec, or the earlier one. The
// insert is one statement, so of replicas starting at once with different
// secrets (each its own new CA) exactly one wins and all get the winner's.
// created reports whether sec was stored.
func (s *sqlStore) PutSealedIfAbsent(ctx context.Context, sec Sealed) (stored Sealed, created bool, err error) {
	if sec.Name == "" || sec.KeyID == "" || len(sec.Blob) == 0 {
		return Sealed{}, false, fmt.Errorf("storing sealed secret %q: name, key ID and blob are required", sec.Name)
	}
	if sec.CreatedAt.IsZero() {
		sec.CreatedAt = time.Now()
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO server_secrets (name, key_id, sealed, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO NOTHING`, sec.Name, sec.KeyID, sec.Blob, nanos(sec.CreatedAt))
	if err != nil {
		return Sealed{}, false, fmt.Errorf("storing sealed secret %s: %w", sec.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return Sealed{}, false, fmt.Errorf("storing sealed secret %s: %w", sec.Name, err)
	}
	stored, err = s.GetSealed(ctx, sec.Name)
	return stored, n == 1, err
}

// GetSealed returns the sealed secret name; ErrNotFound if there is none.
func (s *sqlStore) GetSealed(ctx context.Context, name string) (Sealed, error) {
	sec := Sealed{Name: name}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT key_id, sealed, created_at FROM server_secrets WHERE name = ?`, name).
		Scan(&sec.KeyID, &sec.Blob, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Sealed{}, fmt.Errorf("sealed secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Sealed{}, fmt.Errorf("reading sealed secret %s: %w", name, err)
	}
	sec.CreatedAt = fromNanos(created)
	return sec, nil
}

// ReplaceSealed replaces the sealed secret old.Name with sec (of the same
// name) if the store still holds old as it was read: its blob. Otherwise
// it returns ErrConflict, and the caller reads the secret again: of
// replicas that change one secret at once (two CA rotations begun through
// two replicas), one wins and the others learn of it.
func (s *sqlStore) ReplaceSealed(ctx context.Context, old, sec Sealed) error {
	if sec.Name == "" || sec.Name != old.Name || sec.KeyID == "" || len(sec.Blob) == 0 {
		return fmt.Errorf("replacing sealed secret %q: the same name, a key ID and a blob are required", sec.Name)
	}
	if sec.CreatedAt.IsZero() {
		sec.CreatedAt = time.Now()
	}
	// In a transaction, so that a CA rotation asked through the API
	// writes its audit record with it; one that lost the race writes none.
	return s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE server_secrets SET key_id = ?, sealed = ?, created_at = ? WHERE name = ? AND sealed = ?`,
			sec.KeyID, sec.Blob, nanos(sec.CreatedAt), sec.Name, old.Blob)
		if err != nil {
			return fmt.Errorf("replacing sealed secret %s: %w", sec.Name, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("replacing sealed secret %s: %w", sec.Name, err)
		}
		if n != 1 {
			return fmt.Errorf("replacing sealed secret %s: it changed since it was read: %w", sec.Name, ErrConflict)
		}
		return nil
	})
}

// NodeCert records the newest certificate issued to a node: the CA root
// that issued it (its fingerprint) and its lifetime.
type NodeCert struct {
	NodeID   string
	CA       string
	IssuedAt time.Time
	NotAfter time.Time
}

// RecordNodeCert records c as its node's newest certificate.
func (s *sqlStore) RecordNodeCert(ctx context.Context, c NodeCert) error {
	err := s.tx(ctx, func(tx dbtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO node_certs (node_id, ca, issued_at, not_after) VALUES (?, ?, ?, ?)
		ON CONFLICT (node_id) DO UPDATE SET ca = excluded.ca, issued_at = excluded.issued_at, not_after = excluded.not_after`,
			c.NodeID, c.CA, nanos(c.IssuedAt), nanos(c.NotAfter))
		return err
	})
	if err != nil {
		return fmt.Errorf("recording the certificate of node %s: %w", c.NodeID, err)
	}
	return nil
}

// ListNodeCerts returns the newest certificate recorded of each node that
// is still in the store, by node ID.
func (s *sqlStore) ListNodeCerts(ctx context.Context) ([]NodeCert, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT c.node_id, c.ca, c.issued_at, c.not_after FROM node_certs c
		JOIN nodes n ON n.id = c.node_id ORDER BY c.node_id`)
	if err != nil {
		return nil, fmt.Errorf("listing node certificates: %w", err)
	}
	defer rows.Close()
	var out []NodeCert
	for rows.Next() {
		var (
			c                NodeCert
			issued, notAfter int64
		)
		if err := rows.Scan(&c.NodeID, &c.CA, &issued, &notAfter); err != nil {
			return nil, fmt.Errorf("listing node certificates: %w", err)
		}
		c.IssuedAt, c.NotAfter = fromNanos(issued), fromNanos(notAfter)
		out = append(out, c)
	}
	return out, rows.Err()
}
