package pki

import (
	"errors"
	"strings"
	"testing"
)

const (
	testFingerprint = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testTokenID     = "abcdefgh2345"
	testSecret      = "qrstuvwxyz234567abcdefghij"
)

func TestNewTokenIDAndSecret(t *testing.T) {
	id, secret := NewTokenID(), NewSecret()
	if checkTokenID(id) != "" {
		t.Errorf("NewTokenID() = %q: %s", id, checkTokenID(id))
	}
	if checkSecret(secret) != "" {
		t.Errorf("NewSecret() = %q: %s", secret, checkSecret(secret))
	}
	if id == NewTokenID() || secret == NewSecret() {
		t.Errorf("two calls returned the same value")
	}
}

func TestEnrollTokenRoundTrip(t *testing.T) {
	fp := newTestCA(t).Fingerprint()
	id, secret := NewTokenID(), NewSecret()
	token := FormatEnrollToken(fp, id, secret)
	if !strings.HasPrefix(token, "dft1-"+fp+"-") {
		t.Errorf("token %q does not start with dft1-<fingerprint>-", token)
	}
	for _, s := range []string{token, " " + token + "\r\n"} {
		gotFP, gotID, gotSecret, err := ParseEnrollToken(s)
		if err != nil {
			t.Fatalf("ParseEnrollToken(%q): %v", s, err)
		}
		if gotFP != fp || gotID != id || gotSecret != secret {
			t.Errorf("ParseEnrollToken(%q) = %q, %q, %q; want %q, %q, %q", s, gotFP, gotID, gotSecret, fp, id, secret)
		}
	}
}

func TestParseEnrollTokenErrors(t *testing.T) {
	const prefix = "pki: not a dockfleet enrollment token: "
	tests := []struct {
		name, token, want string
	}{
		{"empty", "", "it is empty"},
		{"blank", " \n", "it is empty"},
		{"Swarm token", "SWMTKN-1-" + testFingerprint + "-" + testSecret, `it does not start with "dft1-"`},
		{"API token", "dfa1-" + testTokenID + "-" + testSecret, "it is an API token (dfa1-...)"},
		{"upper case prefix", "DFT1-" + testFingerprint + "-" + testTokenID + "-" + testSecret, `it does not start with "dft1-"`},
		{"secret missing", "dft1-" + testFingerprint + "-" + testTokenID, `it has 2 fields after "dft1-"; want 3 (dft1-<CA fingerprint>-<token ID>-<secret>)`},
		{"extra field", "dft1-" + testFingerprint + "-" + testTokenID + "-" + testSecret + "-x", `it has 4 fields after "dft1-"; want 3 (dft1-<CA fingerprint>-<token ID>-<secret>)`},
		{"short fingerprint", "dft1-" + testFingerprint[1:] + "-" + testTokenID + "-" + testSecret, "CA fingerprint is 63 characters; want 64"},
		{"fingerprint with colons", "dft1-" + strings.Repeat("ab:", 21) + "a-" + testTokenID + "-" + testSecret, "CA fingerprint is not lowercase hexadecimal"},
		{"upper case fingerprint", "dft1-" + strings.ToUpper(testFingerprint) + "-" + testTokenID + "-" + testSecret, "CA fingerprint is not lowercase hexadecimal"},
		{"short token ID", "dft1-" + testFingerprint + "-abc-" + testSecret, "token ID is 3 characters; want 12"},
		{"token ID outside base32", "dft1-" + testFingerprint + "-abcdefgh0189-" + testSecret, "token ID has characters other than a-z and 2-7"},
		{"truncated secret", "dft1-" + testFingerprint + "-" + testTokenID + "-" + testSecret[:20], "secret is 20 characters; want at least 26"},
		{"empty secret", "dft1-" + testFingerprint + "-" + testTokenID + "-", "secret is 0 characters; want at least 26"},
		{"secret outside base32", "dft1-" + testFingerprint + "-" + testTokenID + "-" + strings.ToUpper(testSecret), "secret has characters other than a-z and 2-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp, id, secret, err := ParseEnrollToken(tt.token)
			if !errors.Is(err, ErrBadEnrollToken) {
				t.Fatalf("got error %v; want %v", err, ErrBadEnrollToken)
			}
			if got := err.Error(); got != prefix+tt.want {
				t.Errorf("got message %q; want %q", got, prefix+tt.want)
			}
			if fp != "" || id != "" || secret != "" {
				t.Errorf("got fields %q, %q, %q with the error; want none", fp, id, secret)
			}
			if strings.Contains(strings.ToLower(err.Error()), testSecret[:10]) {
				t.Errorf("message %q repeats the secret", err)
			}
		})
	}
}

func TestAPIToken(t *testing.T) {
	token, id, secretHash := NewAPIToken()
	if !strings.HasPrefix(token, "dfa1-"+id+"-") {
		t.Errorf("token does not start with dfa1-<id>-")
	}
	gotID, secret, err := ParseAPIToken(token)
	if err != nil {
		t.Fatalf("ParseAPIToken: %v", err)
	}
	if gotID != id {
		t.Errorf("ParseAPIToken ID = %q; want %q", gotID, id)
	}
	if !SecretMatches(secret, secretHash) {
		t.Errorf("SecretMatches(secret, hash) = false; want true")
	}
	if SecretMatches(NewSecret(), secretHash) {
		t.Errorf("SecretMatches(other secret, hash) = true; want false")
	}
	if SecretMatches(secret, "") {
		t.Errorf("SecretMatches(secret, \"\") = true; want false")
	}
}

func TestParseAPITokenErrors(t *testing.T) {
	const prefix = "pki: not a dockfleet API token: "
	tests := []struct {
		name, token, want string
	}{
		{"empty", "", "it is empty"},
		{"bearer prefix left in", "Bearer dfa1-" + testTokenID + "-" + testSecret, `it does not start with "dfa1-"`},
		{"enrollment token", FormatEnrollToken(testFingerprint, testTokenID, testSecret), "it is an enrollment token (dft1-...)"},
		{"secret missing", "dfa1-" + testTokenID, `it has 1 fields after "dfa1-"; want 2 (dfa1-<token ID>-<secret>)`},
		{"long token ID", "dfa1-" + testTokenID + "a-" + testSecret, "token ID is 13 characters; want 12"},
		{"truncated secret", "dfa1-" + testTokenID + "-" + testSecret[:25], "secret is 25 characters; want at least 26"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, secret, err := ParseAPIToken(tt.token)
			if !errors.Is(err, ErrBadAPIToken) {
				t.Fatalf("got error %v; want %v", err, ErrBadAPIToken)
			}
			if got := err.Error(); got != prefix+tt.want {
				t.Errorf("got message %q; want %q", got, prefix+tt.want)
			}
			if id != "" || secret != "" {
				t.Errorf("got fields %q, %q with the error; want none", id, secret)
			}
		})
	}
}

func TestHashSecret(t *testing.T) {
	// SHA-256("abc") from FIPS 180-2.
	if got, want := HashSecret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("HashSecret(abc) = %s; want %s", got, want)
	}
}

func FuzzParseEnrollToken(f *testing.F) {
	f.Add(FormatEnrollToken(testFingerprint, testTokenID, testSecret))
	f.Add("dft1-" + testFingerprint + "-" + testTokenID)
	f.Add("dft1----")
	f.Add("dfa1-" + testTokenID + "-" + testSecret)
	f.Add("")
	f.Add("dft1-\xff\xfe-é-ü")
	f.Fuzz(func(t *testing.T, s string) {
		fp, id, secret, err := ParseEnrollToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadEnrollToken) {
				t.Fatalf("error %v does not wrap %v", err, ErrBadEnrollToken)
			}
			return
		}
		if got, want := FormatEnrollToken(fp, id, secret), strings.TrimSpace(s); got != want {
			t.Fatalf("FormatEnrollToken(ParseEnrollToken(%q)) = %q", s, got)
		}
		if p := checkFingerprint(fp) + checkTokenID(id) + checkSecret(secret); p != "" {
			t.Fatalf("ParseEnrollToken(%q) accepted a bad field: %s", s, p)
		}
	})
}

func FuzzParseAPIToken(f *testing.F) {
	token, _, _ := NewAPIToken()
	f.Add(token)
	f.Add("dfa1--")
	f.Add(FormatEnrollToken(testFingerprint, testTokenID, testSecret))
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseAPIToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadAPIToken) {
				t.Fatalf("error %v does not wrap %v", err, ErrBadAPIToken)
			}
			return
		}
		if got, want := "dfa1-"+id+"-"+secret, strings.TrimSpace(s); got != want {
			t.Fatalf("ParseAPIToken(%q) = %q, %q; does not rebuild the token", s, id, secret)
		}
	})
}
