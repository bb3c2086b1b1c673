package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

func (s *sqlStore) ApplyRevision(ctx context.Context, d api.Deployment, rev api.Revision, ro api.Rollout, events []api.Event) (api.Deployment, error) {
	var out api.Deployment
	err := s.tx(ctx, func(tx dbtx) error {
		events := slices.Clip(events) // appending copies: an attempt run again starts from the caller's
		var err error
		if out, err = putDeployment(ctx, tx, d); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO revisions (project, deployment, number, spec, image_digest, pinned_by, pinned_by_name, cause, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			rev.Project, rev.Deployment, rev.Number, toJSON(rev.Spec), rev.ImageDigest, rev.PinnedBy, rev.PinnedByName, rev.Cause, nanos(rev.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("revision %d of %s/%s: %w", rev.Number, rev.Project, rev.Deployment, ErrExists)
		}
		if err != nil {
			return err
		}
		active, err := activeRollouts(ctx, tx, `WHERE project = ? AND deployment = ? AND state IN (?, ?)`, d.Project, d.Name, api.RolloutRunning, api.RolloutPaused)
		if err != nil {
			return err
		}
		for _, old := range active {
			old.State, old.Phase, old.UpdatedAt = api.RolloutSuperseded, api.PhaseDone, ro.CreatedAt
			old.Message = fmt.Sprintf("superseded by the rollout to revision %d", ro.To)
			if _, err := updateRollout(ctx, tx, old); err != nil {
				return err
			}
			events = append(events, api.Event{Time: ro.CreatedAt, Project: old.Project, Deployment: old.Deployment, Rollout: old.ID,
				Type: "rollout.superseded", Message: old.Message})
		}
		ro.Version = 1
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (id, project, deployment, state, data, created_at, version) VALUES (?, ?, ?, ?, ?, ?, 1)`,
			ro.ID, ro.Project, ro.Deployment, ro.State, toJSON(ro), nanos(ro.CreatedAt)); err != nil {
			return err
		}
		return appendEvents(ctx, tx, events)
	})
	return out, err
}

func scanRevision(row interface{ Scan(...any) error }) (api.Revision, error) {
	var (
		r       api.Revision
		spec    string
		created int64
	)
	if err := row.Scan(&r.Project, &r.Deployment, &r.Number, &spec, &r.ImageDigest, &r.PinnedBy, &r.PinnedByName, &r.Cause, &created); err != nil {
		return r, err
	}
	r.CreatedAt = fromNanos(created)
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		return r, fmt.Errorf("revision %d of %s/%s: %w", r.Number, r.Project, r.Deployment, err)
	}
	return r, nil
}

const revisionCols = `project, deployment, number, spec, image_digest, pinned_by, pinned_by_name, cause, created_at`

func (s *sqlStore) GetRevision(ctx context.Context, project, deployment string, number int64) (api.Revision, error) {
	r, err := scanRevision(s.db.QueryRowContext(ctx, `SELECT `+revisionCols+` FROM revisions WHERE project = ? AND deployment = ? AND number = ?`,
		project, deployment, number))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("revision %d of %s/%s: %w", number, project, deployment, ErrNotFound)
	}
	return r, err
}

func (s *sqlStore) ListRevisions(ctx context.Context, project, deployment string) ([]api.Revision, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+revisionCols+` FROM revisions WHERE project = ? AND deployment = ? ORDER BY number`, project, deployment)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Revision
	for rows.Next() {
		r, err := scanRevision(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *sqlStore) PinRevisionDigest(ctx context.Context, project, deployment string, number int64, digest, nodeID, nodeName string) (api.Revision, error) {
	var rev api.Revision
	err := s.tx(ctx, func(tx dbtx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE revisions SET image_digest = ?, pinned_by = ?, pinned_by_name = ? WHERE project = ? AND deployment = ? AND number = ? AND image_digest = ''`,
			digest, nodeID, nodeName, project, deployment, number); err != nil {
			return err
		}
		var err error
		rev, err = scanRevision(tx.QueryRowContext(ctx, `SELECT `+revisionCols+` FROM revisions WHERE project = ? AND deployment = ? AND number = ?`,
			project, deployment, number))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("revision %d of %s/%s: %w", number, project, deployment, ErrNotFound)
		}
		return err
	})
	return rev, err
}

func activeRollouts(ctx context.Context, q dbtx, where string, args ...any) ([]api.Rollout, error) {
	rows, err := q.QueryContext(ctx, `SELECT data, version FROM rollouts `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Rollout
	for rows.Next() {
		var (
			data string
			r    api.Rollout
		)
		if err := rows.Scan(&data, &r.Version); err != nil {
			return nil, err
		}
		v := r.Version
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return nil, fmt.Errorf("rollout: %w", err)
		}
		r.Version = v
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *sqlStore) LatestRollout(ctx context.Context, project, deployment string) (api.Rollout, error) {
	rs, err := activeRollouts(ctx, s.db, `WHERE project = ? AND deployment = ?`, project, deployment)
	if err != nil {
		return api.Rollout{}, err
	}
	if len(rs) == 0 {
		return api.Rollout{}, fmt.Errorf("rollout of %s/%s: %w", project, deployment, ErrNotFound)
	}
	return rs[len(rs)-1], nil
}

func (s *sqlStore) ActiveRollouts(ctx context.Context) ([]api.Rollout, error) {
	return activeRollouts(ctx, s.db, `WHERE state IN (?, ?)`, api.RolloutRunning, api.RolloutPaused)
}

func updateRollout(ctx context.Context, tx dbtx, r api.Rollout) (api.Rollout, error) {
	res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, data = ?, version = version + 1 WHERE id = ? AND version = ?`,
		r.State, toJSON(r), r.ID, r.Version)
	if err != nil {
		return r, err
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return r, fmt.Errorf("rollout %s: %w", r.ID, ErrConflict)
	}
	r.Version++
	return r, nil
}

func (s *sqlStore) StepRollout(ctx context.Context, r api.Rollout, moves []InstanceMove, stable *int64, events []api.Event) (api.Rollout, error) {
	var out api.Rollout
	err := s.tx(ctx, func(tx dbtx) error {
		var err error
		if out, err = updateRollout(ctx, tx, r); err != nil {
			return err
		}
		now := nanos(time.Now())
		// A step's moves go to one or two revisions: one statement for
		// each, not one per instance.
		type target struct {
			revision int64
			hash     string
		}
		to := map[target][]any{}
		for _, m := range moves {
			k := target{m.Revision, m.SpecHash}
			to[k] = append(to[k], m.ID)
		}
		for k, ids := range to {
			if err := execRows(ctx, tx, `UPDATE instances SET revision = ?, spec_hash = ?, state = ?, reason = '', image_digest = '', updated_at = ?,
				observed_at = 0, version = version + 1 WHERE id IN `, []any{k.revision, k.hash, api.InstancePending, now}, 1, ids, ""); err != nil {
				return err
			}
		}
		if len(moves) > 0 {
			if err := bumpStateSeq(ctx, tx); err != nil {
				return err
			}
		}
		if stable != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET stable_revision = ?, version = version + 1 WHERE project = ? AND name = ?`,
				*stable, r.Project, r.Deployment); err != nil {
				return err
			}
		}
		return appendEvents(ctx, tx, events)
	})
	if err != nil {
		return r, err
	}
	return out, nil
}

func appendEvents(ctx context.Context, tx dbtx, events []api.Event) error {
	if len(events) > 0 && tx.d.lockEvents != "" {
		if _, err := tx.ExecContext(ctx, tx.d.lockEvents); err != nil {
			return err
		}
	}
	for _, e := range events {
		if _, err := tx.ExecContext(ctx, `INSERT INTO events (time, project, deployment, rollout, type, message) VALUES (?, ?, ?, ?, ?, ?)`,
			nanos(e.Time), e.Project, e.Deployment, e.Rollout, e.Type, e.Message); err != nil {
			return err
		}
	}
	return nil
}

func (s *sqlStore) AppendEvents(ctx context.Context, events []api.Event) error {
	if len(events) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx dbtx) error { return appendEvents(ctx, tx, events) })
}

func (s *sqlStore) ListEvents(ctx context.Context, f EventFilter) ([]api.Event, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, time, project, deployment, rollout, type, message FROM events
		WHERE seq > ? AND (? = '' OR project = ?) AND (? = '' OR deployment = ?) ORDER BY seq LIMIT ?`,
		f.After, f.Project, f.Project, f.Deployment, f.Deployment, f.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Event
	for rows.Next() {
		var (
			e  api.Event
			at int64
		)
		if err := rows.Scan(&e.Seq, &at, &e.Project, &e.Deployment, &e.Rollout, &e.Type, &e.Message); err != nil {
			return nil, err
		}
		e.Time = fromNanos(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *sqlStore) PruneRevisions(ctx context.Context, keep int) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.d.pruneRevisions, keep, api.RolloutRunning, api.RolloutPaused)
	if err != nil {
		return 0, fmt.Errorf("pruning revisions: %w", err)
	}
	return res.RowsAffected()
}

func (s *sqlStore) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	// The keep newest are those after the (keep+1)th newest; sequence
	// numbers may have gaps (PostgreSQL's, of transactions that did not
	// commit), so it is found by counting, not by subtraction.
	res, err := s.db.ExecContext(ctx, `DELETE FROM events WHERE time < ? OR seq <= (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?)`,
		nanos(before), keep)
	if err != nil {
		return 0, fmt.Errorf("pruning events: %w", err)
	}
	return res.RowsAffected()
}
