// Package datadir keeps a daemon's data directory private. The server's
// holds the CA key, the admin token and the store (every spec, with its
// environment); the agent's holds the node key and its desired state. None
// of it is for other local users, whatever the umask or the mode a package
// or `mkdir -p` gave the directory before dockfleet first ran. WriteFile
// writes the files in it so that a crash never leaves half of one.
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// Modes of what Secure leaves in a data directory.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// Secure creates dir if needed and makes it, every directory below it,
// mode 0700 and every regular file in them mode 0600, logging at Warn each
// one it had to narrow, so an operator learns that the files were open to
// others before. Symbolic links are neither followed nor changed.
func Secure(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var want fs.FileMode
		switch {
		case d.IsDir():
			want = DirMode
		case d.Type().IsRegular():
			want = FileMode
		default:
			return nil // links, sockets: not ours to change
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile, as a temporary file may be
		}
		if err != nil {
			return err
		}
		if info.Mode().Perm() == want {
			return nil
		}
		if err := os.Chmod(path, want); err != nil {
			return err
		}
		log.Warn("data directory: narrowed the mode of a file others could reach", "path", path,
			"was", fmt.Sprintf("%#o", info.Mode().Perm()), "now", fmt.Sprintf("%#o", want))
		return nil
	})
	if err != nil {
		return fmt.Errorf("securing data directory %s: %w", dir, err)
	}
	return nil
}
