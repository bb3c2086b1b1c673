package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/store"
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

var errUnauthorized = errors.New("missing or invalid API token: pass one with --token or DOCKFLEET_TOKEN")

// authenticate checks the bearer token of r.
func (s *Server) authenticate(r *http.Request) error {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return errUnauthorized
	}
	id, secret, err := pki.ParseAPIToken(strings.TrimSpace(tok))
	if err != nil {
		return errUnauthorized
	}
	want, err := s.store.APITokenHash(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return errUnauthorized
	}
	if err != nil {
		return err
	}
	if !pki.SecretMatches(secret, want) {
		return errUnauthorized
	}
	return nil
}
