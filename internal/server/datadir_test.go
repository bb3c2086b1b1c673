package server

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
)

// A data dir made beforehand by a package or `mkdir -p` is 0755, and the
// store's files were 0644 before the fix: any local user could read every
// spec's environment from dockfleet.db-wal (security review, finding 7).
// The server narrows all of it at start, says so, and keeps what it writes
// private.
func TestDataDirIsPrivateWhateverItWasBefore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func() (*Server, string) {
		var logs bytes.Buffer
		s, err := New(context.Background(), testConfig(t, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() }) // at once if closed already
		// A write, so that the WAL holds a row.
		if _, err := s.CreateEnrollToken(context.Background(), api.TokenRequest{Uses: 1}); err != nil {
			t.Fatal(err)
		}
		return s, logs.String()
	}
	checkPrivate := func(when string) {
		t.Helper()
		var files []string
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			info, _ := d.Info()
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			} else {
				files = append(files, d.Name())
			}
			if info.Mode().Perm() != want {
				t.Errorf("%s: %s has mode %#o; want %#o", when, p, info.Mode().Perm(), want)
			}
			return nil
		})
		for _, f := range []string{"dockfleet.db", "dockfleet.db-wal", DefaultKeyFile, "ca.crt", "server.key", "admin.token"} {
			if !strings.Contains(strings.Join(files, " "), f) {
				t.Errorf("%s: no %s in the data dir (%v); the check would miss it", when, f, files)
			}
		}
	}

	s, logs := start()
	if !strings.Contains(logs, "narrowed the mode") || !strings.Contains(logs, dir) {
		t.Errorf("the server did not say it narrowed the data dir's mode:\n%s", logs)
	}
	checkPrivate("first start")

	// A data dir from an older version, or opened up by hand.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, logs = start()
	if !strings.Contains(logs, "dockfleet.db") {
		t.Errorf("the server did not say it narrowed the store's mode:\n%s", logs)
	}
	checkPrivate("restart")
}
