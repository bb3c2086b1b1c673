package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/store"
)

// TestBackupWhileWriting takes backups of a store that another goroutine
// writes to, each transaction placing two instances and raising the state
// sequence once: every backup must open as a store and hold a state some
// transaction left, never half of one.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "dockfleet.db")
	s := openSQLite(t, dbPath)
	base, err := s.StateSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var written atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			add := []api.Instance{
				{ID: fmt.Sprintf("a%d", i), Project: "default", Deployment: "web", NodeID: "n1"},
				{ID: fmt.Sprintf("b%d", i), Project: "default", Deployment: "web", NodeID: "n2"},
			}
			if err := s.ApplyPlacement(ctx, add, nil); err != nil {
				t.Error(err)
				return
			}
			written.Add(1)
		}
	})
	defer func() { close(stop); wg.Wait() }()

	backups := filepath.Join(t.TempDir(), "backups")
	if err := os.Mkdir(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	var lastSeq uint64
	for k := range 5 {
		// Wait for writes between backups, so each one is taken mid-writes.
		for w := written.Load(); written.Load() < w+3; {
			if t.Failed() {
				t.FailNow()
			}
			runtime.Gosched()
		}
		out := filepath.Join(backups, fmt.Sprintf("b%d.db", k))
		b, err := store.BackupSQLite(ctx, dbPath, out, false)
		if err != nil {
			t.Fatalf("backup %d: %v", k, err)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 || fi.Size() != b.Bytes {
			t.Errorf("backup %d: mode %v, %d bytes; want 0600, %d bytes", k, fi.Mode().Perm(), fi.Size(), b.Bytes)
		}
		c := openSQLite(t, out)
		is, err := c.ListInstances(ctx, store.InstanceFilter{})
		if err != nil {
			t.Fatal(err)
		}
		q, err := c.StateSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		txs := uint64(len(is) / 2)
		if len(is)%2 != 0 || q.Seq != base.Seq+txs || b.StateSeq != q.Seq {
			t.Errorf("backup %d: %d instances at state sequence %d (reported %d), from %d; want an even number, one sequence step per two",
				k, len(is), q.Seq, b.StateSeq, base.Seq)
		}
		if q.Held != q.Seq {
			t.Errorf("backup %d: state sequence %+v; want it born held at its sequence, so that a server restored from it cannot overtake the agents", k, q)
		}
		if q.Seq < lastSeq {
			t.Errorf("backup %d is at state sequence %d, older than the backup before it (%d)", k, q.Seq, lastSeq)
		}
		lastSeq = q.Seq
		c.Close()
	}
	if lastSeq == base.Seq {
		t.Errorf("no backup saw a write; the test proves nothing")
	}
	entries, _ := os.ReadDir(backups)
	if len(entries) != 5 {
		t.Errorf("the backup directory holds %d entries; want the 5 backups, nothing left beside them", len(entries))
	}
}

// TestBackupBadInput checks that a backup that cannot be made says why,
// and writes nothing.
func TestBackupBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "dockfleet.db")
	openSQLite(t, dbPath).Close()
	notStore := filepath.Join(dir, "notes.db")
	if err := os.WriteFile(notStore, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	existing := filepath.Join(outDir, "existing.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, db, out, want string
	}{
		{"existing output", dbPath, existing, "existing.db exists: choose another --out, or pass --force"},
		{"missing directory", dbPath, filepath.Join(outDir, "nope", "b.db"), "backup directory " + filepath.Join(outDir, "nope") + " does not exist"},
		{"no store", filepath.Join(t.TempDir(), "dockfleet.db"), filepath.Join(outDir, "b1.db"), "no store at "},
		{"not a store", notStore, filepath.Join(outDir, "b2.db"), "notes.db is not a dockfleet store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.BackupSQLite(ctx, tc.db, tc.out, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want an error containing %q", err, tc.want)
			}
		})
	}
	entries, _ := os.ReadDir(outDir)
	if len(entries) != 1 {
		t.Errorf("the output directory holds %d entries; want only existing.db", len(entries))
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Errorf("existing.db was changed: %q", b)
	}
	// --force replaces it.
	if _, err := store.BackupSQLite(ctx, dbPath, existing, true); err != nil {
		t.Fatalf("with overwrite: %v", err)
	}
	openSQLite(t, existing)
}
