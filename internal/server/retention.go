package server

import (
	"context"
	"time"
)

// Defaults of Config's retention. Fifty revisions go back months for a
// deployment applied daily; a month of events covers any rollout an
// operator still asks about, and the count bounds the table however busy
// the fleet is.
const (
	DefaultRevisionHistory = 50
	DefaultEventRetention  = 30 * 24 * time.Hour
	DefaultMaxEvents       = 100_000
)

// pruneInterval is how often old revisions and events are deleted. A
// variable so that tests can shorten it.
var pruneInterval = time.Hour

// pruneHistory deletes, at start and every pruneInterval until ctx ends,
// the revisions and events beyond what Config keeps: each apply adds a
// revision and each rollout step events, which would otherwise grow the
// store for ever.
func (s *Server) pruneHistory(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		s.prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) prune(ctx context.Context) {
	revs, err := s.store.PruneRevisions(ctx, s.cfg.RevisionHistory)
	if err != nil && ctx.Err() == nil {
		s.log.Error("pruning old revisions; retrying later", "err", err)
	}
	evs, err := s.store.PruneEvents(ctx, time.Now().Add(-s.cfg.EventRetention), s.cfg.MaxEvents)
	if err != nil && ctx.Err() == nil {
		s.log.Error("pruning old events; retrying later", "err", err)
	}
	// Expired sessions and API tokens are refused already; their rows go.
	toks, err := s.store.PruneAPITokens(ctx, time.Now())
	if err != nil && ctx.Err() == nil {
		s.log.Error("pruning expired API tokens; retrying later", "err", err)
	}
	if revs+evs+toks > 0 {
		s.log.Info("pruned history", "revisions", revs, "events", evs, "expired_tokens", toks,
			"revision_history", s.cfg.RevisionHistory, "event_retention", s.cfg.EventRetention, "max_events", s.cfg.MaxEvents)
	}
}
