package store

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Replica is a server replica as the store knows it.
type Replica struct {
	ID        string
	AgentAddr string
	APIAddr   string
	StartedAt time.Time
	// Silence is how long ago, by the store's clock, the replica last
	// renewed its record (ReplicaSeen).
	Silence time.Duration
}

// Session says that a node's stream is held by a replica, or no longer is.
type Session struct {
	NodeID  string
	Replica string
	Since   time.Time
	// Closed removes the record, if the replica still holds it: a newer
	// stream on another replica keeps its own.
	Closed bool
	// Reopened records that a stream the replica had recorded as closed
	// (its node silent there) is heard from again: it takes the record
	// only if no replica holds it. A loaded replica may handle an agent's
	// buffered messages seconds after the agent left it for another;
	// those must not take the record from the newer stream.
	Reopened bool
}

// DesiredState is a node's desired state as the leader wrote it: State is
// an agentproto.DesiredState, Key digests what it asks (fanout.Key).
type DesiredState struct {
	NodeID string
	Seq    int64
	Key    string
	State  []byte
}

// Report is something an agent told a replica, for the leader: Body is an
// agentproto.AgentMessage.
type Report struct {
	Seq    int64
	NodeID string
	Body   []byte
}

// ReplicaSeen records that replica r runs, now by the store's clock.
func (s *sqlStore) ReplicaSeen(ctx context.Context, r Replica) error {
	return s.txOn(ctx, s.beatDB, s.d.txOptions, func(tx dbtx) error {
		now, err := s.storeNow(ctx, tx)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO replicas (id, agent_addr, api_addr, started_at, seen_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, r.ID, r.AgentAddr, r.APIAddr, nanos(r.StartedAt), now)
		return err
	})
}

// ListReplicas lists the replicas, each with how long it has been silent.
func (s *sqlStore) ListReplicas(ctx context.Context) ([]Replica, error) {
	var out []Replica
	err := s.txOn(ctx, s.beatDB, s.d.txOptions, func(tx dbtx) error {
		out = nil
		now, err := s.storeNow(ctx, tx)
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, agent_addr, api_addr, started_at, seen_at FROM replicas ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				r             Replica
				started, seen int64
			)
			if err := rows.Scan(&r.ID, &r.AgentAddr, &r.APIAddr, &started, &seen); err != nil {
				return err
			}
			r.StartedAt, r.Silence = fromNanos(started), time.Duration(max(now-seen, 0))
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, err
}

// DeleteReplica forgets replica id and the streams it held.
func (s *sqlStore) DeleteReplica(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx dbtx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM node_sessions WHERE replica = ?`, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE id = ?`, id)
		return err
	})
}

// UpdateSessions records streams opened and closed, in order, in one
// transaction. The rows are written by node, each node's in the order
// given: two replicas writing the same nodes then lock them in one order.
func (s *sqlStore) UpdateSessions(ctx context.Context, ss []Session) error {
	if len(ss) == 0 {
		return nil
	}
	ss = slices.Clone(ss)
	slices.SortStableFunc(ss, func(a, b Session) int { return strings.Compare(a.NodeID, b.NodeID) })
	return s.blindTx(ctx, func(tx dbtx) error {
		for _, x := range ss {
			var err error
			switch {
			case x.Closed:
				_, err = tx.ExecContext(ctx, `DELETE FROM node_sessions WHERE node_id = ? AND replica = ?`, x.NodeID, x.Replica)
			case x.Reopened:
				_, err = tx.ExecContext(ctx, `INSERT INTO node_sessions (node_id, replica, since) VALUES (?, ?, ?)
					ON CONFLICT (node_id) DO NOTHING`, x.NodeID, x.Replica, nanos(x.Since))
			default:
				_, err = tx.ExecContext(ctx, `INSERT INTO node_sessions (node_id, replica, since) VALUES (?, ?, ?)
					ON CONFLICT (node_id) DO UPDATE SET replica = excluded.replica, since = excluded.since`, x.NodeID, x.Replica, nanos(x.Since))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// ListSessions lists which replica holds each connected node's stream.
func (s *sqlStore) ListSessions(ctx context.Context) ([]Session, error) {
	// On the heartbeats' pool: the leader counts the nodes it lists as
	// heard from, and must not wait behind the fleet's work to.
	rows, err := s.beatQ().QueryContext(ctx, `SELECT node_id, replica, since FROM node_sessions ORDER BY node_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var (
			x     Session
			since int64
		)
		if err := rows.Scan(&x.NodeID, &x.Replica, &since); err != nil {
			return nil, err
		}
		x.Since = fromNanos(since)
		out = append(out, x)
	}
	return out, rows.Err()
}

// PutDesiredStates writes nodes' desired states in one transaction, all
// with one new sequence number, greater than any before, and returns it.
// Under a fence (WithFence) only the lease holder's writes commit.
func (s *sqlStore) PutDesiredStates(ctx context.Context, ds []DesiredState) (int64, error) {
	var seq int64
	err := s.tx(ctx, func(tx dbtx) error {
		// Reading the greatest number in the transaction that writes the
		// next one keeps numbers in commit order: SQLite has one writer,
		// and PostgreSQL fails one of two serializable transactions that
		// both read the same greatest number.
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) + 1 FROM desired_states`).Scan(&seq); err != nil {
			return err
		}
		// One statement may not write a row twice: a node's last state
		// wins, as it would written one by one.
		last := make(map[string]int, len(ds))
		for i, d := range ds {
			last[d.NodeID] = i
		}
		rows := make([]any, 0, 4*len(last))
		for i, d := range ds {
			if last[d.NodeID] == i {
				rows = append(rows, d.NodeID, seq, d.Key, d.State)
			}
		}
		return execRows(ctx, tx, `INSERT INTO desired_states (node_id, seq, key, state) VALUES `, nil, 4, rows,
			` ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq, key = excluded.key, state = excluded.state`)
	})
	return seq, err
}

// DeleteDesiredStates forgets the desired states of nodes that are gone.
func (s *sqlStore) DeleteDesiredStates(ctx context.Context, nodeIDs []string) error {
	ids := make([]any, len(nodeIDs))
	for i, id := range nodeIDs {
		ids[i] = id
	}
	return s.tx(ctx, func(tx dbtx) error {
		return execRows(ctx, tx, `DELETE FROM desired_states WHERE node_id IN `, nil, 1, ids, "")
	})
}

// DesiredSince lists, without their states, the nodes whose desired state
// was written after sequence number after, and returns the greatest
// number it saw (after, if none).
func (s *sqlStore) DesiredSince(ctx context.Context, after int64) ([]DesiredState, int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT node_id, seq, key FROM desired_states WHERE seq > ? ORDER BY seq, node_id`, after)
	if err != nil {
		return nil, after, err
	}
	defer rows.Close()
	var out []DesiredState
	for rows.Next() {
		var d DesiredState
		if err := rows.Scan(&d.NodeID, &d.Seq, &d.Key); err != nil {
			return nil, after, err
		}
		after = max(after, d.Seq)
		out = append(out, d)
	}
	return out, after, rows.Err()
}

// desiredBatch is how many nodes one query of DesiredStates asks for.
const desiredBatch = 500

// DesiredStates returns the desired states of nodes, those that have one.
func (s *sqlStore) DesiredStates(ctx context.Context, nodeIDs []string) ([]DesiredState, error) {
	var out []DesiredState
	for len(nodeIDs) > 0 {
		batch := nodeIDs[:min(desiredBatch, len(nodeIDs))]
		nodeIDs = nodeIDs[len(batch):]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		q := `SELECT node_id, seq, key, state FROM desired_states WHERE node_id IN (?` + strings.Repeat(", ?", len(batch)-1) + `)`
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var d DesiredState
			if err := rows.Scan(&d.NodeID, &d.Seq, &d.Key, &d.State); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AppendReports queues agents' reports for the leader.
func (s *sqlStore) AppendReports(ctx context.Context, rs []Report) error {
	if len(rs) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx dbtx) error {
		for _, r := range rs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO agent_reports (node_id, body) VALUES (?, ?)`, r.NodeID, r.Body); err != nil {
				return err
			}
		}
		return nil
	})
}

// Reports returns up to limit queued reports, oldest first. A report stays
// queued until DeleteReports: a leader that dies before it handled one
// leaves it to the next.
func (s *sqlStore) Reports(ctx context.Context, limit int) ([]Report, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, node_id, body FROM agent_reports ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Report
	for rows.Next() {
		var r Report
		if err := rows.Scan(&r.Seq, &r.NodeID, &r.Body); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeleteReports removes handled reports.
func (s *sqlStore) DeleteReports(ctx context.Context, seqs []int64) error {
	return s.tx(ctx, func(tx dbtx) error {
		for _, q := range seqs {
			if _, err := tx.ExecContext(ctx, `DELETE FROM agent_reports WHERE seq = ?`, q); err != nil {
				return err
			}
		}
		return nil
	})
}
