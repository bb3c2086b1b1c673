package server

import (
	"context"
	"fmt"
	"log/slog"
)

// fdMargin is what the server holds open besides one connection per
// agent: its listeners, the store's files, API clients and agents
// enrolling or reconnecting while their old connection lingers.
const fdMargin = 1000

// fdNeed is how many open files a server of agents needs.
func fdNeed(agents int) uint64 { return uint64(max(agents, 0)) + fdMargin }

// checkFDLimit warns when the process may not open enough files for the
// fleet it expects. Every connected agent holds one connection, an open
// file, for as long as it runs, so past the limit new agents are refused
// at accept; the warning says so at start, not when the fleet grows into
// it. The fleet is the larger of the enrolled nodes and
// Config.ExpectedAgents. Go raises the soft limit to the hard one at
// start (go.dev/issue/46279), so it is the hard limit that counts.
func (s *Server) checkFDLimit(ctx context.Context) {
	limit, ok := openFileLimit()
	if !ok {
		return
	}
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		s.log.Warn("cannot check the open-file limit: listing nodes", "err", err)
		return
	}
	warnFDLimit(s.log, limit, len(nodes), s.cfg.ExpectedAgents)
}

// warnFDLimit logs the warning of checkFDLimit when limit is below what
// the larger of enrolled and expected agents need.
func warnFDLimit(log *slog.Logger, limit uint64, enrolled, expected int) {
	agents := max(enrolled, expected)
	need := fdNeed(agents)
	if limit >= need {
		return
	}
	log.Warn("open-file limit too low for the expected fleet: each agent holds one connection, an open file, "+
		"and agents beyond the limit cannot connect",
		"limit", limit, "need", need, "agents", agents, "enrolled_nodes", enrolled, "expected_agents", expected,
		"fix", fmt.Sprintf("raise the hard limit to at least %d: LimitNOFILE=%d in the systemd unit, "+
			"`ulimit -n %d` in the shell that starts the server, or `docker run --ulimit nofile=%d:%d`; see docs/operations.md",
			need, need, need, need, need))
}
