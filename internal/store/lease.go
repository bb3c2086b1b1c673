package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrFenced is the answer to a write made for a lease its replica no
// longer holds (WithFence): another replica took the lease, and the
// write would undo its work. Nothing was written.
var ErrFenced = errors.New("store: this replica no longer holds the lease it wrote for")

// Lease is a lease as the store holds it.
type Lease struct {
	// Holder is the replica that holds it; Epoch grows by one each time
	// it changes hands.
	Holder string
	Epoch  int64
}

// Fence is a lease a write must still be made under.
type Fence struct {
	Name   string
	Holder string
	Epoch  int64
}

type fenceKey struct{}

// WithFence returns a context whose writes (every transaction the store
// runs with it) commit only while f's holder still holds lease f.Name at
// f.Epoch; otherwise they fail with ErrFenced and change nothing. The
// check is part of the transaction, so a write either commits before the
// lease changes hands or not at all.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// checkFence fails with ErrFenced if ctx carries a fence that tx's lease no
// longer matches.
func checkFence(ctx context.Context, tx dbtx) error {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	if !ok {
		return nil
	}
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM leases WHERE name = ? AND holder = ? AND epoch = ?`, f.Name, f.Holder, f.Epoch).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("lease %s, epoch %d: %w", f.Name, f.Epoch, ErrFenced)
	}
	return err
}

// storeNow is the store's time in Unix nanoseconds: the database server's
// clock where there is one (PostgreSQL), so that replicas never compare
// their own clocks; this process's for SQLite, which one process holds.
func (s *sqlStore) storeNow(ctx context.Context, tx dbtx) (int64, error) {
	if s.d.now == "" {
		return time.Now().UnixNano(), nil
	}
	var now int64
	err := tx.QueryRowContext(ctx, s.d.now).Scan(&now)
	return now, err
}

// AcquireLease takes lease name for holder for ttl if it is free or
// expired (strictly past its expiry), renews it if holder holds it, and
// returns it as it then is: held by holder or by another replica.
func (s *sqlStore) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	var l Lease
	err := s.txOn(ctx, s.beatDB, s.d.txOptions, func(tx dbtx) error {
		now, err := s.storeNow(ctx, tx)
		if err != nil {
			return err
		}
		expires := now + ttl.Nanoseconds()
		var cur int64
		err = tx.QueryRowContext(ctx, `SELECT holder, epoch, expires_at FROM leases WHERE name = ?`, name).Scan(&l.Holder, &l.Epoch, &cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			l = Lease{Holder: holder, Epoch: 1}
			_, err = tx.ExecContext(ctx, `INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, ?, ?)`, name, holder, l.Epoch, expires)
			return err
		case err != nil:
			return err
		case l.Holder == holder && now <= cur:
			_, err = tx.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE name = ?`, expires, name)
			return err
		case now > cur:
			l = Lease{Holder: holder, Epoch: l.Epoch + 1}
			_, err = tx.ExecContext(ctx, `UPDATE leases SET holder = ?, epoch = ?, expires_at = ? WHERE name = ?`, holder, l.Epoch, expires, name)
			return err
		}
		return nil // another replica holds it
	})
	if isUnique(err) {
		// Another replica created the lease in the same instant: it holds it.
		return s.lease(ctx, name)
	}
	return l, err
}

func (s *sqlStore) lease(ctx context.Context, name string) (Lease, error) {
	var l Lease
	err := s.beatQ().QueryRowContext(ctx, `SELECT holder, epoch FROM leases WHERE name = ?`, name).Scan(&l.Holder, &l.Epoch)
	return l, err
}

// beatQ runs queries on the heartbeats' pool.
func (s *sqlStore) beatQ() dbtx { return dbtx{r: s.beatDB, d: s.d} }

// ReleaseLease ends holder's lease name of epoch, if it still holds it,
// so that another replica may take it at once.
func (s *sqlStore) ReleaseLease(ctx context.Context, name, holder string, epoch int64) error {
	_, err := s.beatQ().ExecContext(ctx, `UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND epoch = ?`, name, holder, epoch)
	return err
}
