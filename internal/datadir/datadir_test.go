package datadir

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecureNarrowsEveryModeAndSaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	sub := filepath.Join(dir, "agent")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]fs.FileMode{
		filepath.Join(dir, "dockfleet.db-wal"): 0o644,
		filepath.Join(dir, "ca.key"):           0o600,
		filepath.Join(sub, "desired.json"):     0o666,
	}
	for p, m := range files {
		if err := os.WriteFile(p, []byte("x"), m); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, m); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/etc/hostname", link); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if err := Secure(dir, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{dir: DirMode, sub: DirMode} {
		if st, _ := os.Stat(p); st.Mode().Perm() != want {
			t.Errorf("%s: mode %#o; want %#o", p, st.Mode().Perm(), want)
		}
	}
	for p := range files {
		if st, _ := os.Stat(p); st.Mode().Perm() != FileMode {
			t.Errorf("%s: mode %#o; want %#o", p, st.Mode().Perm(), FileMode)
		}
	}
	// Three were open to others (the data dir, agent/ and two files); the
	// key already was private and is not mentioned.
	for _, p := range []string{dir, sub, "dockfleet.db-wal", "desired.json"} {
		if !strings.Contains(logs.String(), p) {
			t.Errorf("log does not name %s:\n%s", p, logs.String())
		}
	}
	if strings.Contains(logs.String(), "ca.key") || strings.Contains(logs.String(), "link") {
		t.Errorf("log names a file that needed no change:\n%s", logs.String())
	}
}

func TestSecureCreatesAPrivateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := Secure(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != DirMode {
		t.Fatalf("stat %s: %v, %v; want a %#o directory", dir, st, err, DirMode)
	}
}
