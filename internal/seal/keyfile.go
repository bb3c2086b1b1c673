package seal

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The key file is text, so that an operator can tell what it is and which
// key it holds without tools:
//
//	# dockfleet key file ...
//	version: 1
//	id: 3f2a9c1b0d4e5f60
//	key: <32 bytes, standard base64>
//
// The id is the key's ID (Key.ID), checked against the key on load, so a
// damaged or hand-edited file is caught there and not when a blob fails to
// open. Lines starting with # are comments.
const (
	keyFileVersion = "1"
	keyFileHeader  = `# dockfleet key file: it seals the server's secrets in the store (docs/operations.md#key-file).
# Every server replica of one store needs this same file. Keep it readable by its owner only, and
# back it up apart from the store: without it the store's CA and admin token cannot be opened.
`
)

// MarshalKeyFile returns k in the key file format. The result is secret.
func MarshalKeyFile(k *Key) []byte {
	return fmt.Appendf(nil, "%sversion: %s\nid: %s\nkey: %s\n", keyFileHeader, keyFileVersion, k.ID(),
		base64.StdEncoding.EncodeToString(k.raw))
}

// ParseKeyFile reads a key in the key file format. name is where data came
// from, for errors, which say which line is wrong and how, and never hold
// the key. They wrap ErrKeyFileFormat.
func ParseKeyFile(name string, data []byte) (*Key, error) {
	fields := map[string]string{}
	lines := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		field, value, ok := strings.Cut(line, ":")
		field, value = strings.TrimSpace(field), strings.TrimSpace(value)
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %s:%d: want \"field: value\"", ErrKeyFileFormat, name, n)
		case field != "version" && field != "id" && field != "key":
			return nil, fmt.Errorf("%w: %s:%d: unknown field %q; a key file has version, id and key", ErrKeyFileFormat, name, n, field)
		case lines[field] != 0:
			return nil, fmt.Errorf("%w: %s:%d: %s given again (first on line %d)", ErrKeyFileFormat, name, n, field, lines[field])
		}
		fields[field], lines[field] = value, n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s:%d: %v", ErrKeyFileFormat, name, n+1, err)
	}
	for _, f := range []string{"version", "id", "key"} {
		if lines[f] == 0 {
			return nil, fmt.Errorf("%w: %s: no %s line; is this a dockfleet key file?", ErrKeyFileFormat, name, f)
		}
	}
	if v := fields["version"]; v != keyFileVersion {
		return nil, fmt.Errorf("%w: %s:%d: version %q; this dockfleet reads version %s", ErrKeyFileFormat, name, lines["version"], v, keyFileVersion)
	}
	raw, err := base64.StdEncoding.DecodeString(fields["key"])
	if err != nil {
		return nil, fmt.Errorf("%w: %s:%d: key is not standard base64", ErrKeyFileFormat, name, lines["key"])
	}
	if len(raw) != KeySize {
		return nil, fmt.Errorf("%w: %s:%d: key is %d bytes; want %d (AES-256)", ErrKeyFileFormat, name, lines["key"], len(raw), KeySize)
	}
	k, err := newKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s:%d: %v", ErrKeyFileFormat, name, lines["key"], err)
	}
	if id := fields["id"]; id != k.ID() {
		return nil, fmt.Errorf("%w: %s:%d: id %q is not the ID of the key on line %d (%s): the file was damaged or edited; restore it from a backup",
			ErrKeyFileFormat, name, lines["id"], id, lines["key"], k.ID())
	}
	return k, nil
}

// LoadKeyFile reads the key file at path. Like ssh with a private key, it
// refuses a file that other users may read or write (ErrKeyFileMode),
// saying its mode and the command that fixes it. A missing file is an error
// wrapping fs.ErrNotExist.
func LoadKeyFile(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKeyFileFormat, path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o, so other users can reach the key; make it its owner's only: chmod 600 %s",
			ErrKeyFileMode, path, perm, path)
	}
	// A key file is a few hundred bytes; more is not one, and is not read
	// whole.
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", path, err)
	}
	return ParseKeyFile(path, data)
}

// CreateKeyFile makes a new key and writes it to path, mode 0600, unless a
// file is there already (an error wrapping fs.ErrExist). The file appears
// whole or not at all: it is written aside and linked into place, so a crash
// never leaves half a key, and of two servers creating it at once one wins
// and the other's attempt fails.
func CreateKeyFile(path string) (*Key, error) {
	k, err := NewKey()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("creating key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(MarshalKeyFile(k))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("creating key file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) && errors.Is(le.Err, fs.ErrExist) {
			return nil, fmt.Errorf("creating key file %s: %w", path, fs.ErrExist)
		}
		return nil, fmt.Errorf("creating key file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return nil, fmt.Errorf("syncing %s: %w", dir, err)
	}
	return k, nil
}
