package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestServerCertificate(t *testing.T) {
	ca := newTestCA(t)
	hosts := []string{"Fleet.Example.com", "10.0.0.5", "[2001:db8::1]", "fleet.example.com", " localhost "}
	cert, err := ca.ServerCertificate(hosts, 24*time.Hour)
	if err != nil {
		t.Fatalf("ServerCertificate: %v", err)
	}
	leaf := cert.Leaf
	if got, want := leaf.DNSNames, []string{"localhost", "fleet.example.com"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %q; want %q", got, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "10.0.0.5", "2001:db8::1"}; !slices.Equal(ips, want) {
		t.Errorf("IPAddresses = %q; want %q", ips, want)
	}
	if got, want := leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage = %v; want %v", got, want)
	}
	if leaf.IsCA {
		t.Errorf("server certificate is a CA")
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.cert.Raw) {
		t.Errorf("chain has %d certificates; want the leaf, then the CA", len(cert.Certificate))
	}
	if !bytes.Equal(cert.Certificate[0], leaf.Raw) {
		t.Errorf("chain does not start with the leaf")
	}
	if key, ok := cert.PrivateKey.(crypto.Signer); !ok || checkKeyMatches(key, leaf) != nil {
		t.Errorf("private key %T does not match the leaf", cert.PrivateKey)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "fleet.example.com", "10.0.0.5", "2001:db8::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: h}); err != nil {
			t.Errorf("verifying for %s: %v", h, err)
		}
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != 24*time.Hour+backdate {
		t.Errorf("lifetime %v; want %v", life, 24*time.Hour+backdate)
	}
}

func TestServerCertificateCappedAtCAExpiry(t *testing.T) {
	ca := newTestCA(t)
	cert, err := ca.ServerCertificate(nil, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cert.Leaf.NotAfter, ca.cert.NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter = %v; want the CA's, %v", got, want)
	}
}

func TestServerCertificateErrors(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name  string
		hosts []string
		ttl   time.Duration
		want  error
		msg   string
	}{
		{"host with port", []string{"fleet.example.com:8443"}, time.Hour, ErrInvalidHost,
			`pki: invalid host: "fleet.example.com:8443": want a DNS name or IP address (no port, scheme or path)`},
		{"URL", []string{"https://fleet.example.com"}, time.Hour, ErrInvalidHost, ""},
		{"empty host", []string{""}, time.Hour, ErrInvalidHost, ""},
		{"space inside", []string{"fleet example"}, time.Hour, ErrInvalidHost, ""},
		{"zero ttl", nil, 0, ErrInvalidTTL, ""},
		{"negative ttl", nil, -time.Hour, ErrInvalidTTL, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.ServerCertificate(tt.hosts, tt.ttl)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v; want %v", err, tt.want)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("got message %q; want %q", err, tt.msg)
			}
		})
	}
}

func TestLoadOrCreateServerCertificate(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	hosts := []string{"fleet.example.com", "10.0.0.5"}
	store := func(t *testing.T, dir string, ca *CA, hosts []string, ttl time.Duration) *x509.Certificate {
		cert, err := ca.ServerCertificate(hosts, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeServerCertificate(dir, cert); err != nil {
			t.Fatal(err)
		}
		return cert.Leaf
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) *x509.Certificate // the stored leaf, or nil
		hosts []string
		reuse bool
	}{
		{"nothing stored", func(*testing.T, string) *x509.Certificate { return nil }, hosts, false},
		{"same hosts", func(t *testing.T, dir string) *x509.Certificate {
			return store(t, dir, ca, hosts, serverCertValidity)
		}, hosts, true},
		{"fewer hosts, other order and case", func(t *testing.T, dir string) *x509.Certificate {
			return store(t, dir, ca, hosts, serverCertValidity)
		}, []string{"10.0.0.5", "FLEET.example.com"}, true},
		{"new host", func(t *testing.T, dir string) *x509.Certificate {
			return store(t, dir, ca, hosts, serverCertValidity)
		}, append(slices.Clone(hosts), "fleet2.example.com"), false},
		{"31 days left", func(t *testing.T, dir string) *x509.Certificate {
			return store(t, dir, ca, hosts, 31*24*time.Hour)
		}, hosts, true},
		{"29 days left", func(t *testing.T, dir string) *x509.Certificate {
			return store(t, dir, ca, hosts, 29*24*time.Hour)
		}, hosts, false},
		{"issued by another CA", func(t *testing.T, dir string) *x509.Certificate {
			return store(t, dir, other, hosts, serverCertValidity)
		}, hosts, false},
		{"key of another certificate", func(t *testing.T, dir string) *x509.Certificate {
			leaf := store(t, dir, ca, hosts, serverCertValidity)
			keyPEM, err := os.ReadFile(filepath.Join(dir, serverKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			store(t, dir, ca, hosts, serverCertValidity)
			if err := os.WriteFile(filepath.Join(dir, serverKeyFile), keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			return leaf
		}, hosts, false},
		{"garbage certificate", func(t *testing.T, dir string) *x509.Certificate {
			leaf := store(t, dir, ca, hosts, serverCertValidity)
			if err := os.WriteFile(filepath.Join(dir, serverCertFile), []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
			return leaf
		}, hosts, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			stored := tt.setup(t, dir)
			cert, err := LoadOrCreateServerCertificate(dir, ca, tt.hosts)
			if err != nil {
				t.Fatalf("LoadOrCreateServerCertificate: %v", err)
			}
			reused := stored != nil && cert.Leaf.SerialNumber.Cmp(stored.SerialNumber) == 0
			if reused != tt.reuse {
				t.Errorf("reused stored certificate = %v; want %v", reused, tt.reuse)
			}
			if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.cert.Raw) {
				t.Errorf("chain does not end with the CA")
			}
			if !tt.reuse {
				if life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore); life != serverCertValidity+backdate {
					t.Errorf("new certificate lives %v; want %v", life, serverCertValidity+backdate)
				}
			}
			for _, h := range tt.hosts {
				if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: h}); err != nil {
					t.Errorf("verifying for %s: %v", h, err)
				}
			}
			if got := fileMode(t, filepath.Join(dir, serverKeyFile)); got != 0o600 {
				t.Errorf("server.key mode = %v; want 0600", got)
			}
			again, err := LoadOrCreateServerCertificate(dir, ca, tt.hosts)
			if err != nil {
				t.Fatal(err)
			}
			if again.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) != 0 {
				t.Errorf("next start issued another certificate; want the stored one")
			}
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Fleet.Example.COM", "fleet.example.com"},
		{"[::1]", "::1"},
		{"2001:DB8:0:0::1", "2001:db8::1"},
		{" 10.0.0.1\n", "10.0.0.1"},
		{"*.fleet.example.com", "*.fleet.example.com"},
	}
	for _, tt := range tests {
		got, err := normalizeHost(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("normalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if ip := net.ParseIP(got); ip != nil && ip.String() != got {
			t.Errorf("normalizeHost(%q) = %q; want canonical %q", tt.in, got, ip)
		}
	}
}
