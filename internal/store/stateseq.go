package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// StateSeqs is the store's state sequence: a durable counter that every
// write changing what a node should run raises (ApplyPlacement,
// SetInstanceRevision, StepRollout when it moves instances,
// DeleteDeployment, DeleteNode). The server sends it with each desired
// state and agents remember the highest they applied. A store restored
// from an older backup brings an older sequence back: agents that applied
// a higher one hold what it sends instead of removing what it does not
// know, until an operator decides (dockfleet store accept-restore).
type StateSeqs interface {
	// StateSeq reads the state sequence.
	StateSeq(ctx context.Context) (StateSeq, error)
	// RaiseStateSeq sets the sequence to at least atLeast and ends a hold:
	// desired states carry it again, above every agent's. It returns the
	// sequence as it is then.
	RaiseStateSeq(ctx context.Context, atLeast uint64) (StateSeq, error)
	// HoldStateSeq records that an agent has applied agentSeq, above the
	// sequence the store sends: the store was restored from an older
	// backup. The first call freezes the sequence sent (Held) at the
	// current one; each raises Ahead to agentSeq if that is higher.
	HoldStateSeq(ctx context.Context, agentSeq uint64) (StateSeq, error)
}

// StateSeq is the state sequence of a store.
type StateSeq struct {
	// Seq grows with every change of what a node should run.
	Seq uint64
	// Held is not 0 while agents are ahead of the store (it was restored
	// from an older backup): the sequence desired states carry until
	// RaiseStateSeq, so that writes made since cannot overtake the agents'
	// sequences and have them apply a state that would remove what they
	// run.
	Held uint64
	// Ahead is the highest sequence an agent reported above the store's,
	// 0 if none.
	Ahead uint64
}

// Sent is the sequence desired states carry: Held while held, else Seq.
// It never decreases in one store.
func (q StateSeq) Sent() uint64 {
	if q.Held != 0 {
		return q.Held
	}
	return q.Seq
}

// bumpStateSeq raises the state sequence by one, in the transaction that
// changes what a node should run.
func bumpStateSeq(ctx context.Context, tx dbtx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE state_seq SET seq = seq + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("raising the state sequence: %w", err)
	}
	return nil
}

func scanStateSeq(row *sql.Row) (StateSeq, error) {
	var q StateSeq
	if err := row.Scan(&q.Seq, &q.Held, &q.Ahead); err != nil {
		return q, fmt.Errorf("reading the state sequence: %w", err)
	}
	return q, nil
}

const stateSeqCols = `seq, held, ahead`

func (s *sqlStore) StateSeq(ctx context.Context) (StateSeq, error) {
	return scanStateSeq(s.db.QueryRowContext(ctx, `SELECT `+stateSeqCols+` FROM state_seq WHERE id = 1`))
}

func (s *sqlStore) RaiseStateSeq(ctx context.Context, atLeast uint64) (StateSeq, error) {
	var q StateSeq
	err := s.tx(ctx, func(tx dbtx) error {
		var err error
		q, err = scanStateSeq(tx.QueryRowContext(ctx, `UPDATE state_seq SET seq = `+s.d.greatest+`(seq, ?), held = 0, ahead = 0 WHERE id = 1 RETURNING `+stateSeqCols, atLeast))
		return err
	})
	return q, err
}

func (s *sqlStore) HoldStateSeq(ctx context.Context, agentSeq uint64) (StateSeq, error) {
	var q StateSeq
	err := s.tx(ctx, func(tx dbtx) error {
		var err error
		q, err = scanStateSeq(tx.QueryRowContext(ctx, `UPDATE state_seq SET held = CASE held WHEN 0 THEN seq ELSE held END, ahead = `+s.d.greatest+`(ahead, ?)
			WHERE id = 1 AND ? > CASE held WHEN 0 THEN seq ELSE held END RETURNING `+stateSeqCols, agentSeq, agentSeq))
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// The agent is not ahead of what the store sends: nothing to hold.
		q, err = scanStateSeq(tx.QueryRowContext(ctx, `SELECT `+stateSeqCols+` FROM state_seq WHERE id = 1`))
		return err
	})
	return q, err
}
