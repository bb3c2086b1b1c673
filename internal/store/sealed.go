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
