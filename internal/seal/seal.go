// Package seal keeps a server's secrets encrypted at rest with one key that
// every server replica is given in a key file. The store holds the sealed
// blobs (the CA's private key, the bootstrap admin token); a replica that has
// the key file opens them, so all replicas of one store share one identity,
// and a copy of the store alone gives away no secret.
//
// A sealed blob is AES-256-GCM with a random nonce. The key's ID and the
// blob's name are bound to it as additional data, so a blob opens only under
// the name it was sealed for: the sealed CA key cannot be passed off as the
// admin token. The blob starts with a version byte: version 1 is sealed
// directly with the key; a later version can wrap a per-secret data key with
// it instead (envelope encryption) without changing the key file.
//
// Only the standard library's crypto is used: crypto/aes and crypto/cipher
// do the work, this package only frames it.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// Errors callers can test for with errors.Is; most are wrapped with detail.
var (
	// ErrWrongKey is returned by Open for a blob sealed with another key.
	ErrWrongKey = errors.New("seal: sealed with another key")
	// ErrCorrupt is returned by Open for a blob that does not authenticate:
	// it was changed, or it was sealed for another name.
	ErrCorrupt = errors.New("seal: sealed data does not authenticate (changed, or sealed for another name)")
	// ErrFormat is returned by Open for a blob that is not one Seal made.
	ErrFormat = errors.New("seal: not sealed data")
	// ErrKeyFileMode is returned by LoadKeyFile for a key file other users
	// can read or write.
	ErrKeyFileMode = errors.New("seal: key file permissions are too open")
	// ErrKeyFileFormat is returned by LoadKeyFile for a file that is not a
	// key file.
	ErrKeyFileFormat = errors.New("seal: malformed key file")
)

const (
	// KeySize is the length of a key: AES-256.
	KeySize = 32
	// idSize is how many bytes of the key's SHA-256 name it.
	idSize = 8
	// version1 blobs are version || key ID || nonce || AES-256-GCM(plaintext).
	version1 byte = 1
	// aadPrefix starts the additional data, so that nothing else sealed
	// with the same key and format could pass for a dockfleet blob.
	aadPrefix = "dockfleet seal v1\x00"
)

// Key is a key that seals and opens blobs. It is safe for concurrent use.
// Its String and LogValue give its ID only, never the key. The zero value
// is not usable; get one from NewKey or LoadKeyFile.
type Key struct {
	raw  []byte
	id   [idSize]byte
	aead cipher.AEAD
}

// NewKey returns a new random key.
func NewKey() (*Key, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	return newKey(raw)
}

func newKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("key is %d bytes; want %d", len(raw), KeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Key{raw: raw, aead: aead}
	sum := sha256.Sum256(raw)
	copy(k.id[:], sum[:idSize])
	return k, nil
}

// ID names the key: the hex of the first 8 bytes of its SHA-256. It is
// not secret; logs, errors and the store show it.
func (k *Key) ID() string { return hex.EncodeToString(k.id[:]) }

// String is the key's ID, so that printing a key never prints the key.
func (k *Key) String() string { return "key " + k.ID() }

// LogValue is the key's ID, so that logging a key never logs the key.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.ID()) }

// Seal encrypts plaintext for name. Open with the same key and name gives it
// back; any other key, name or change to the blob fails.
func (k *Key) Seal(name string, plaintext []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	header := 1 + idSize + ns
	out := make([]byte, header, header+len(plaintext)+k.aead.Overhead())
	out[0] = version1
	copy(out[1:], k.id[:])
	// A random 96-bit nonce is safe for far more blobs than a server
	// seals (NIST SP 800-38D: 2^32 per key).
	if _, err := rand.Read(out[1+idSize : header]); err != nil {
		return nil, fmt.Errorf("sealing %s: %w", name, err)
	}
	return k.aead.Seal(out, out[1+idSize:header], plaintext, k.aad(name)), nil
}

// Open decrypts a blob Seal made for name. Its errors wrap ErrFormat,
// ErrWrongKey (saying which key the blob needs) or ErrCorrupt, and never
// hold any of the plaintext.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	id, err := KeyID(sealed)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	if id != k.ID() {
		return nil, fmt.Errorf("opening %s: %w: it needs key %s, this is key %s", name, ErrWrongKey, id, k.ID())
	}
	ns := k.aead.NonceSize()
	header := 1 + idSize + ns
	if len(sealed) < header+k.aead.Overhead() {
		return nil, fmt.Errorf("opening %s: %w: %d bytes is too short", name, ErrFormat, len(sealed))
	}
	plain, err := k.aead.Open(nil, sealed[1+idSize:header], sealed[header:], k.aad(name))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, ErrCorrupt)
	}
	return plain, nil
}

// aad is what a blob is bound to besides its key: the format, the key's
// ID and the blob's name.
func (k *Key) aad(name string) []byte {
	aad := make([]byte, 0, len(aadPrefix)+1+idSize+len(name))
	aad = append(aad, aadPrefix...)
	aad = append(aad, version1)
	aad = append(aad, k.id[:]...)
	return append(aad, name...)
}

// KeyID returns the ID of the key a blob was sealed with, read from the
// blob without opening it.
func KeyID(sealed []byte) (string, error) {
	if len(sealed) == 0 {
		return "", fmt.Errorf("%w: empty", ErrFormat)
	}
	if sealed[0] != version1 {
		return "", fmt.Errorf("%w: version %d; this dockfleet knows version %d (a newer dockfleet sealed it?)", ErrFormat, sealed[0], version1)
	}
	if len(sealed) < 1+idSize {
		return "", fmt.Errorf("%w: %d bytes is too short", ErrFormat, len(sealed))
	}
	return hex.EncodeToString(sealed[1 : 1+idSize]), nil
}
