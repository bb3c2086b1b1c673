package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/dockfleet/dockfleet/internal/api"
)

// auditFile copies the audit records this replica writes to a file, one
// JSON object per line, for a SIEM to ship (--audit-file). The store's log
// is the record of truth: a line the file could not take is lost from the
// copy only, and logged.
type auditFile struct {
	mu  sync.Mutex
	f   *os.File
	log *slog.Logger
}

func openAuditFile(path string, log *slog.Logger) (*auditFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the audit file: %w", err)
	}
	return &auditFile{f: f, log: log}, nil
}

// write appends r as one line: records are small, and one write of a
// whole line under O_APPEND is never interleaved with another's.
func (a *auditFile) write(r api.AuditRecord) {
	b, _ := json.Marshal(r)
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.f.Write(append(b, '\n')); err != nil {
		a.log.Error("writing to the audit file; the record is in the store's audit log", "file", a.f.Name(), "seq", r.Seq, "err", err)
	}
}

func (a *auditFile) Close() error {
	if a == nil {
		return nil
	}
	return a.f.Close()
}
