package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ca, created, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("first LoadOrCreateCA: %v", err)
	}
	if !created {
		t.Errorf("first call: created = false; want true")
	}
	if got := fileMode(t, filepath.Join(dir, CAKeyFile)); got != 0o600 {
		t.Errorf("ca.key mode = %v; want 0600", got)
	}
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("data dir mode = %v; want 0700", got)
	}

	again, created, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateCA: %v", err)
	}
	if created {
		t.Errorf("second call: created = true; want false")
	}
	if got, want := again.Fingerprint(), ca.Fingerprint(); got != want {
		t.Errorf("second call: fingerprint %s; want %s", got, want)
	}

	certs, err := parseCertsPEM(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(ca.CertPEM()) {
		t.Errorf("ca.crt differs from CertPEM")
	}
	sum := sha256.Sum256(certs[0].Raw)
	if got, want := ca.Fingerprint(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Fingerprint() = %s; want %s", got, want)
	}
	c := certs[0]
	if !c.IsCA || !c.MaxPathLenZero {
		t.Errorf("IsCA = %v, MaxPathLenZero = %v; want true, true", c.IsCA, c.MaxPathLenZero)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < 10*365*24*time.Hour {
		t.Errorf("CA lifetime %v; want at least 10 years", life)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Errorf("CA does not verify against its own pool: %v", err)
	}
}

func TestLoadOrCreateCAErrors(t *testing.T) {
	// copyFile copies name from a directory holding another CA.
	other := t.TempDir()
	if _, _, err := LoadOrCreateCA(other); err != nil {
		t.Fatal(err)
	}
	copyFile := func(t *testing.T, dir, name string) {
		data, err := os.ReadFile(filepath.Join(other, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  error
	}{
		{"cert without key", func(t *testing.T, dir string) { copyFile(t, dir, CACertFile) }, ErrCAIncomplete},
		{"key without cert", func(t *testing.T, dir string) { copyFile(t, dir, CAKeyFile) }, ErrCAIncomplete},
		{"key of another CA", func(t *testing.T, dir string) {
			if _, _, err := LoadOrCreateCA(dir); err != nil {
				t.Fatal(err)
			}
			copyFile(t, dir, CAKeyFile)
		}, ErrKeyMismatch},
		{"expired", func(t *testing.T, dir string) {
			if _, err := createCA(dir, time.Now().Add(-caValidity-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, ErrCAExpired},
		{"not a CA", func(t *testing.T, dir string) {
			ca := newTestCA(t)
			cert := newTestServerCert(t, ca)
			if err := writeServerCertificate(dir, cert); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, serverCertFile), filepath.Join(dir, CACertFile)); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, serverKeyFile), filepath.Join(dir, CAKeyFile)); err != nil {
				t.Fatal(err)
			}
		}, ErrNotCA},
		{"cert is not PEM", func(t *testing.T, dir string) {
			copyFile(t, dir, CAKeyFile)
			if err := os.WriteFile(filepath.Join(dir, CACertFile), []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, ErrInvalidPEM},
		{"key is not PEM", func(t *testing.T, dir string) {
			copyFile(t, dir, CACertFile)
			if err := os.WriteFile(filepath.Join(dir, CAKeyFile), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, ErrInvalidPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			ca, _, err := LoadOrCreateCA(dir)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v; want %v", err, tt.want)
			}
			if ca != nil {
				t.Errorf("got a CA with the error")
			}
		})
	}
}

func TestLoadOrCreateCAIncompleteMessage(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateCA(dir)
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	want := "pki: CA is incomplete: " + keyPath + " exists but " + certPath + " does not; restore it, or remove " +
		keyPath + " to create a new CA (every agent then has to enroll again)"
	if err == nil || err.Error() != want {
		t.Errorf("got error %v; want %s", err, want)
	}
	// The lone key is kept for the operator to decide.
	if _, err := os.Stat(keyPath); err != nil {
		t.Errorf("ca.key after the error: %v", err)
	}
}

// A CA kept as PEM (sealed in the store) comes back as the same CA, able
// to sign for the agents that trust it.
func TestCAPEMRoundTrip(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	data, err := ca.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA("sealed CA", data)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("fingerprint %s; want %s", again.Fingerprint(), ca.Fingerprint())
	}
	// A node certificate the parsed CA signs verifies against the original.
	id := newTestIdentity(t, again, "node-1", time.Hour)
	if _, err := id.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a certificate the parsed CA signed does not verify against the original: %v", err)
	}

	other, _ := NewCA()
	otherPEM, _ := other.MarshalPEM()
	otherKey := otherPEM[len(other.CertPEM()):]
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"certificate only":  {ca.CertPEM(), ErrInvalidPEM},
		"key only":          {data[len(ca.CertPEM()):], ErrInvalidPEM},
		"another CA's key":  {append(ca.CertPEM(), otherKey...), ErrKeyMismatch},
		"not PEM":           {[]byte("hello"), ErrInvalidPEM},
		"key then cert too": {append(slices.Clone(otherKey), ca.CertPEM()...), ErrKeyMismatch},
	} {
		_, err := ParseCA("sealed CA", tc.data)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v; want %v", name, err, tc.want)
		}
	}
}

func TestLoadCAMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCA(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty dir: got %v; want fs.ErrNotExist", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("LoadCA wrote %d files; want none", len(entries))
	}
}
