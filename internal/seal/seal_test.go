package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTestKey(t *testing.T) *Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealRoundTrip(t *testing.T) {
	k := newTestKey(t)
	for _, plain := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("secret "), 1000)} {
		blob, err := k.Seal("ca", plain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.Open("ca", blob)
		if err != nil {
			t.Fatalf("Open(%d bytes): %v", len(plain), err)
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("Open = %q; want %q", got, plain)
		}
		if len(plain) > 8 && bytes.Contains(blob, plain[:8]) {
			t.Errorf("the blob holds its plaintext")
		}
		if id, err := KeyID(blob); err != nil || id != k.ID() {
			t.Errorf("KeyID = %q, %v; want %s", id, err, k.ID())
		}
	}
	// A random nonce: the same plaintext seals differently each time.
	a, _ := k.Seal("ca", []byte("same"))
	b, _ := k.Seal("ca", []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("two seals of one plaintext are equal; want a fresh nonce each")
	}
}

func TestOpenRefuses(t *testing.T) {
	k, other := newTestKey(t), newTestKey(t)
	plain := []byte("-----BEGIN PRIVATE KEY-----")
	blob, err := k.Seal("ca", plain)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("wrong key", func(t *testing.T) {
		_, err := other.Open("ca", blob)
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("got %v; want ErrWrongKey", err)
		}
		if !strings.Contains(err.Error(), k.ID()) || !strings.Contains(err.Error(), other.ID()) {
			t.Errorf("error %q does not name both keys (%s, %s)", err, k.ID(), other.ID())
		}
	})
	t.Run("swapped name", func(t *testing.T) {
		if _, err := k.Open("admin-token", blob); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a blob sealed for ca opened as admin-token: got %v; want ErrCorrupt", err)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		// Every byte after the key ID: nonce, ciphertext and tag.
		for i := 1 + idSize; i < len(blob); i++ {
			bad := bytes.Clone(blob)
			bad[i] ^= 0x01
			if got, err := k.Open("ca", bad); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d changed: Open = %q, %v; want ErrCorrupt", i, got, err)
			}
		}
	})
	t.Run("key ID changed to another key's", func(t *testing.T) {
		// The blob then claims other's key; other still cannot open it.
		bad := bytes.Clone(blob)
		copy(bad[1:], other.id[:])
		if _, err := other.Open("ca", bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v; want ErrCorrupt", err)
		}
	})
	t.Run("format", func(t *testing.T) {
		for name, bad := range map[string][]byte{
			"empty":       nil,
			"version 2":   append([]byte{2}, blob[1:]...),
			"header only": blob[:1+idSize],
			"no tag":      blob[:1+idSize+12+3],
		} {
			if _, err := k.Open("ca", bad); !errors.Is(err, ErrFormat) {
				t.Errorf("%s: got %v; want ErrFormat", name, err)
			}
		}
	})
	for _, err := range []error{ErrWrongKey, ErrCorrupt, ErrFormat} {
		if strings.Contains(err.Error(), string(plain)) {
			t.Errorf("error %q holds the plaintext", err)
		}
	}
}

func TestKeyNeverPrintsItself(t *testing.T) {
	k := newTestKey(t)
	secret := base64.StdEncoding.EncodeToString(k.raw)
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v", k), k.String(), logs.String()} {
		if !strings.Contains(s, k.ID()) || strings.Contains(s, secret) || bytes.Contains([]byte(s), k.raw) {
			t.Errorf("printed key %q: want its ID and nothing of the key", s)
		}
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.key")
	k, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", info, err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "id: "+k.ID()+"\n") {
		t.Errorf("key file does not show its ID %s:\n%s", k.ID(), data)
	}
	again, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != k.ID() {
		t.Fatalf("loaded key %s; want %s", again.ID(), k.ID())
	}
	blob, _ := k.Seal("ca", []byte("hello"))
	if got, err := again.Open("ca", blob); err != nil || string(got) != "hello" {
		t.Errorf("the loaded key opens %q, %v; want hello", got, err)
	}
	// A second create never replaces the key: that would lose the store's secrets.
	if _, err := CreateKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("creating over an existing key file: got %v; want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
		t.Error("a refused create changed the key file")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries; want the key file only (no temporary file left)", len(entries))
	}
}

func TestLoadKeyFileRefusesOpenModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.key")
	if _, err := CreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o640, 0o604, 0o644, 0o660, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyFile(path)
		if !errors.Is(err, ErrKeyFileMode) {
			t.Fatalf("mode %#o: got %v; want ErrKeyFileMode", mode, err)
		}
		for _, want := range []string{path, fmt.Sprintf("%#o", mode), "chmod 600 " + path} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("mode %#o: error %q does not say %q", mode, err, want)
			}
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path); err != nil {
		t.Errorf("mode 0400: %v; want it loaded", err)
	}
	if _, err := LoadKeyFile(path + ".missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v; want fs.ErrNotExist", err)
	}
}

func TestParseKeyFileErrors(t *testing.T) {
	k := newTestKey(t)
	good := string(MarshalKeyFile(k))
	key := base64.StdEncoding.EncodeToString(k.raw)
	short := base64.StdEncoding.EncodeToString(k.raw[:31])
	keyLine := func(s string) string { return strings.Replace(good, "key: "+key, s, 1) }
	tests := []struct {
		name, data string
		want       []string // in the error
	}{
		{"empty", "", []string{"no version line"}},
		{"not a key file", "hello world\n", []string{"k:1", `want "field: value"`}},
		{"PEM", "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n", []string{"k:1"}},
		{"version 2", strings.Replace(good, "version: 1", "version: 2", 1), []string{"k:4", `version "2"`}},
		{"empty key", keyLine("key:"), []string{"k:6", "0 bytes; want 32"}},
		{"no key", keyLine(""), []string{"no key line"}},
		{"31 bytes", keyLine("key: " + short), []string{"k:6", "31 bytes; want 32"}},
		{"not base64", keyLine("key: !!!"), []string{"k:6", "base64"}},
		{"wrong id", strings.Replace(good, "id: "+k.ID(), "id: 0000000000000000", 1), []string{"k:5", "damaged or edited"}},
		{"unknown field", good + "extra: 1\n", []string{"k:7", `unknown field "extra"`}},
		{"key twice", good + "key: " + key + "\n", []string{"k:7", "again (first on line 6)"}},
		{"no id", strings.Replace(good, "id: "+k.ID()+"\n", "", 1), []string{"no id line"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeyFile("k", []byte(tc.data))
			if !errors.Is(err, ErrKeyFileFormat) {
				t.Fatalf("got %v; want ErrKeyFileFormat", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), key) || (len(short) > 8 && strings.Contains(err.Error(), short[:16])) {
				t.Errorf("error %q holds key material", err)
			}
		})
	}
	// Comments and blank lines anywhere, and spaces around fields, are fine.
	loose := "\n# mine\n  key :  " + key + "\n\nid:" + k.ID() + "\n version: 1 \n"
	if got, err := ParseKeyFile("k", []byte(loose)); err != nil || got.ID() != k.ID() {
		t.Errorf("reordered file with comments: %v, %v; want key %s", got, err, k.ID())
	}
}

// FuzzParseKeyFile: no input panics the key file parser, and a file it
// accepts holds a key that writes back to a file it reads as the same key.
func FuzzParseKeyFile(f *testing.F) {
	k, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(MarshalKeyFile(k))
	f.Add([]byte("version: 1\nid: 00\nkey: AAAA\n"))
	f.Add([]byte("# only a comment\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyFile("fuzz", data)
		if err != nil {
			if !errors.Is(err, ErrKeyFileFormat) {
				t.Fatalf("error %v does not wrap ErrKeyFileFormat", err)
			}
			return
		}
		again, err := ParseKeyFile("again", MarshalKeyFile(k))
		if err != nil || again.ID() != k.ID() {
			t.Fatalf("written back: %v, %v; want key %s", again, err, k.ID())
		}
	})
}

// FuzzOpen: no blob panics Open, and none but a sealed one opens.
func FuzzOpen(f *testing.F) {
	k, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	blob, _ := k.Seal("ca", []byte("secret"))
	f.Add(blob)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, err := k.Open("ca", data)
		if err == nil && !bytes.Equal(data, blob) {
			t.Fatalf("a blob Seal did not make opened to %q", plain)
		}
	})
}
