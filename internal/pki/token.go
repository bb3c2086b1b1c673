package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// Token formats. Both are a versioned prefix and fields joined by '-', a
// character none of the fields can hold, so a token splits without
// ambiguity; a new format gets a new prefix.
//
//	dft1-<CA fingerprint, 64 hex>-<token ID>-<secret>   enrollment
//	dfa1-<token ID>-<secret>                            API (bearer)
//
// The token ID is public: the store looks the token up by it and logs name
// it. The secret is stored only as HashSecret's hash.
const (
	enrollTokenPrefix = "dft1-"
	apiTokenPrefix    = "dfa1-"
	enrollTokenLayout = "dft1-<CA fingerprint>-<token ID>-<secret>"
	apiTokenLayout    = "dfa1-<token ID>-<secret>"
	tokenIDLen        = 12
	minSecretLen      = 26 // 130 bits in base32
	fingerprintLen    = 64 // hex SHA-256
)

// NewTokenID returns a fresh token ID: 12 lowercase base32 characters (60
// random bits, enough to keep IDs from colliding; they guard nothing).
func NewTokenID() string {
	return strings.ToLower(rand.Text()[:tokenIDLen])
}

// NewSecret returns a fresh token secret: at least 26 lowercase base32
// characters, at least 128 random bits.
func NewSecret() string {
	return strings.ToLower(rand.Text())
}

// HashSecret returns the hex SHA-256 of a token secret, the form the store
// keeps. A fast hash is right here, unlike for passwords: a secret has 128
// random bits, so no guessing attack against a leaked hash can succeed
// however fast the hash is, and a slow one (argon2) would only cost every
// API request tens of milliseconds and hand attackers a cheap way to load
// the server.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches reports whether secret hashes to secretHash, in time that
// does not depend on where they differ.
func SecretMatches(secret, secretHash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(secretHash)) == 1
}

// FormatEnrollToken joins the parts of an enrollment token. It does not
// check them; ParseEnrollToken does.
func FormatEnrollToken(caFingerprint, tokenID, secret string) string {
	return enrollTokenPrefix + caFingerprint + "-" + tokenID + "-" + secret
}

// ParseEnrollToken splits an enrollment token made by FormatEnrollToken,
// ignoring surrounding white space. Its errors wrap ErrBadEnrollToken, say
// what is wrong, and never repeat the token.
func ParseEnrollToken(s string) (caFingerprint, tokenID, secret string, err error) {
	fields, problem := splitToken(s, enrollTokenPrefix, enrollTokenLayout, 3)
	if problem == "" {
		problem = checkFingerprint(fields[0])
	}
	if problem == "" {
		problem = checkTokenID(fields[1])
	}
	if problem == "" {
		problem = checkSecret(fields[2])
	}
	if problem == "" {
		return fields[0], fields[1], fields[2], nil
	}
	if strings.HasPrefix(strings.TrimSpace(s), apiTokenPrefix) {
		problem = "it is an API token (" + apiTokenPrefix + "...)"
	}
	return "", "", "", fmt.Errorf("%w: %s", ErrBadEnrollToken, problem)
}

// NewAPIToken returns a fresh API token to show its owner once, its ID, and
// the hash of its secret to store.
func NewAPIToken() (token, id, secretHash string) {
	id, secret := NewTokenID(), NewSecret()
	return apiTokenPrefix + id + "-" + secret, id, HashSecret(secret)
}

// ParseAPIToken splits an API token made by NewAPIToken, ignoring
// surrounding white space. Its errors wrap ErrBadAPIToken, say what is
// wrong, and never repeat the token.
func ParseAPIToken(s string) (id, secret string, err error) {
	fields, problem := splitToken(s, apiTokenPrefix, apiTokenLayout, 2)
	if problem == "" {
		problem = checkTokenID(fields[0])
	}
	if problem == "" {
		problem = checkSecret(fields[1])
	}
	if problem == "" {
		return fields[0], fields[1], nil
	}
	if strings.HasPrefix(strings.TrimSpace(s), enrollTokenPrefix) {
		problem = "it is an enrollment token (" + enrollTokenPrefix + "...)"
	}
	return "", "", fmt.Errorf("%w: %s", ErrBadAPIToken, problem)
}

// splitToken returns the n fields after prefix, or a description of what is
// wrong that quotes nothing of s.
func splitToken(s, prefix, layout string, n int) (fields []string, problem string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, "it is empty"
	}
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Sprintf("it does not start with %q", prefix)
	}
	fields = strings.Split(rest, "-")
	if len(fields) != n {
		return nil, fmt.Sprintf("it has %d fields after %q; want %d (%s)", len(fields), prefix, n, layout)
	}
	return fields, ""
}

func checkFingerprint(f string) string {
	if len(f) != fingerprintLen {
		return fmt.Sprintf("CA fingerprint is %d characters; want %d", len(f), fingerprintLen)
	}
	if strings.ContainsFunc(f, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') }) {
		return "CA fingerprint is not lowercase hexadecimal"
	}
	return ""
}

func checkTokenID(id string) string {
	if len(id) != tokenIDLen {
		return fmt.Sprintf("token ID is %d characters; want %d", len(id), tokenIDLen)
	}
	if strings.ContainsFunc(id, notBase32) {
		return "token ID has characters other than a-z and 2-7"
	}
	return ""
}

func checkSecret(secret string) string {
	if len(secret) < minSecretLen {
		return fmt.Sprintf("secret is %d characters; want at least %d", len(secret), minSecretLen)
	}
	if strings.ContainsFunc(secret, notBase32) {
		return "secret has characters other than a-z and 2-7"
	}
	return ""
}

// notBase32 reports a rune outside lowercase RFC 4648 base32.
func notBase32(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7')
}
