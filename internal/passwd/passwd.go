// Package passwd hashes users' passwords with argon2id and checks them,
// in the PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash),
// so that the parameters can grow later and old hashes still verify.
package passwd

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// OWASP's argon2id baseline: 19 MiB, two passes, one lane. A login costs
// about 30 ms of one core here, which the login rate limit bounds.
const (
	memoryKiB = 19 * 1024
	passes    = 2
	lanes     = 1
	saltLen   = 16
	keyLen    = 32
)

// Password length bounds: long enough to resist guessing, short enough
// that nobody hashes a megabyte on each attempt.
const (
	MinLength = 12
	MaxLength = 256
)

// Check says what is wrong with a new password.
func Check(pw string) error {
	switch n := utf8.RuneCountInString(pw); {
	case n < MinLength:
		return fmt.Errorf("the password has %d characters; use at least %d (a passphrase of a few words is easiest)", n, MinLength)
	case len(pw) > MaxLength:
		return fmt.Errorf("the password is longer than %d bytes", MaxLength)
	}
	return nil
}

var b64 = base64.RawStdEncoding

// Hash returns the PHC string of pw under a fresh salt.
func Hash(pw string) string {
	salt := make([]byte, saltLen)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, passes, memoryKiB, lanes, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, memoryKiB, passes, lanes,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// Verify reports whether pw is the password of hash, comparing in constant
// time. A malformed hash matches nothing.
func Verify(pw, hash string) bool {
	var (
		version             int
		memory, time, lanes uint32
	)
	f := strings.Split(hash, "$")
	if len(f) != 6 || f[1] != "argon2id" {
		return false
	}
	if _, err := fmt.Sscanf(f[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &memory, &time, &lanes); err != nil || lanes == 0 || lanes > 255 {
		return false
	}
	salt, err1 := b64.DecodeString(f[4])
	want, err2 := b64.DecodeString(f[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, time, memory, uint8(lanes), uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummy is a hash of no user's password: a login for an unknown user is
// checked against it, so that it costs what a wrong password costs and
// its answer's timing does not tell which users exist. Made at the first
// such login, not at start: every dockfleet process (agents, the CLI)
// links this package, and a hash costs 19 MiB and tens of milliseconds.
var dummy = sync.OnceValue(func() string { return Hash("no user has this password, it only takes the time one takes") })

// VerifyNone spends the time of a Verify and reports false.
func VerifyNone(pw string) bool {
	Verify(pw, dummy())
	return false
}
