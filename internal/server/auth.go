package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/dockfleet/dockfleet/internal/datadir"
)

// writeAdminToken writes the bootstrap admin API token tok to
// DataDir/admin.token, readable by its owner only, unless the file holds it
// already: every replica's data dir gives the operator the credential. A
// file holding another token the store still accepts (an older server's)
// is left alone; one the store does not accept is replaced.
func (s *Server) writeAdminToken(ctx context.Context, id *identity, tok string) error {
	data, err := os.ReadFile(s.adminTok)
	switch {
	case err == nil && string(bytes.TrimSpace(data)) == tok:
		return nil
	case err == nil && id.validToken(ctx, string(data)):
		s.log.Info("admin.token holds an API token other than the store's bootstrap admin token; both work, the file is left as it is", "file", s.adminTok)
		return nil
	case err == nil:
		s.log.Warn("admin.token holds a token this store does not accept; replacing it with the store's bootstrap admin token", "file", s.adminTok)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("reading admin token: %w", err)
	}
	// Written whole and then renamed into place: scripts wait for the file
	// to appear and must never read it half written.
	if err := datadir.WriteFile(s.adminTok, []byte(tok+"\n"), datadir.FileMode); err != nil {
		return fmt.Errorf("writing admin token: %w", err)
	}
	s.log.Info("wrote admin token", "file", s.adminTok)
	return nil
}
