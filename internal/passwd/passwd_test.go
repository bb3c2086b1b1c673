package passwd

import (
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	h := Hash("correct horse battery staple")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q; want a PHC argon2id string with the parameters", h)
	}
	if !Verify("correct horse battery staple", h) {
		t.Error("the right password did not verify")
	}
	for _, wrong := range []string{"", "correct horse battery stapl", "Correct horse battery staple"} {
		if Verify(wrong, h) {
			t.Errorf("%q verified", wrong)
		}
	}
	if Hash("correct horse battery staple") == h {
		t.Error("two hashes of one password are equal: the salt is not fresh")
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=19456,t=2,p=0$c2FsdA$aGFzaA", h[:len(h)-2] + "!!"} {
		if Verify("x", bad) {
			t.Errorf("malformed hash %q verified", bad)
		}
	}
	if VerifyNone("correct horse battery staple") {
		t.Error("VerifyNone verified")
	}
}

func TestCheck(t *testing.T) {
	if err := Check("short"); err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Errorf("short password: %v; want a refusal naming the minimum", err)
	}
	if err := Check(strings.Repeat("x", MaxLength+1)); err == nil {
		t.Error("an over-long password was accepted")
	}
	if err := Check("twelve chars"); err != nil {
		t.Errorf("a 12-character password: %v", err)
	}
}
