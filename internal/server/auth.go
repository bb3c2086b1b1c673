package server

import (
	"context"
	"fmt"
	"os"

	"github.com/dockfleet/dockfleet/internal/pki"
)

// ensureAdminToken makes the bootstrap admin API token on first start and
// writes it to DataDir/admin.token, readable by its owner only.
func (s *Server) ensureAdminToken(ctx context.Context) error {
	if _, err := os.Stat(s.adminTok); err == nil {
		return nil
	}
	tok, id, hash := pki.NewAPIToken()
	if err := s.store.CreateAPIToken(ctx, id, "admin", hash); err != nil {
		return fmt.Errorf("storing admin token: %w", err)
	}
	// Written whole and then renamed into place: scripts wait for the file
	// to appear and must never read it half written.
	tmp := s.adminTok + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing admin token: %w", err)
	}
	if err := os.Rename(tmp, s.adminTok); err != nil {
		return fmt.Errorf("writing admin token: %w", err)
	}
	s.log.Info("created admin token", "file", s.adminTok)
	return nil
}
