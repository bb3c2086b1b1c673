package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/datadir"
)

const (
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	// serverCertValidity is how long LoadOrCreateServerCertificate's
	// certificates live.
	serverCertValidity = 365 * 24 * time.Hour
	// serverCertMinRemaining is how much life a stored server certificate
	// must have left to be used again, so that a server restarted now and
	// then never runs into an expiry.
	serverCertMinRemaining = 30 * 24 * time.Hour
)

// defaultServerHosts are in every server certificate, so that the CLI and
// agents on the server's own host work without naming it.
var defaultServerHosts = []string{"localhost", "127.0.0.1", "::1"}

// ServerCertificate issues a certificate for the server's REST API and agent
// endpoint, valid for ttl (capped at the CA's expiry) and for hosts plus
// localhost, 127.0.0.1 and ::1. A host is a DNS name or an IP address, not a
// host:port or URL. The chain holds the CA certificate after the leaf: an
// enrolling agent finds the CA there by its fingerprint.
func (ca *CA) ServerCertificate(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	names, err := serverHosts(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating server key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "dockfleet server", Organization: []string{"dockfleet"}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range names {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	leaf, err := ca.issue(tmpl, key.Public(), ttl)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing server certificate: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// LoadOrCreateServerCertificate returns the server certificate stored in dir
// (server.crt and server.key) when ca issued it, it covers every host, and it
// has more than 30 days to live; otherwise it issues a new one valid for a
// year and stores it, key with mode 0600. A stored pair that does not parse
// is replaced, not reported: it is ours to regenerate.
func LoadOrCreateServerCertificate(dir string, ca *CA, hosts []string) (tls.Certificate, error) {
	names, err := serverHosts(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, ok, err := ca.loadServerCertificate(dir)
	if err != nil {
		return tls.Certificate{}, err
	}
	if ok && ca.reusable(cert.Leaf, names) {
		return cert, nil
	}
	cert, err = ca.ServerCertificate(hosts, serverCertValidity)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeServerCertificate(dir, cert); err != nil {
		return tls.Certificate{}, err
	}
	return cert, nil
}

// loadServerCertificate reads the stored pair. ok is false when there is
// none or it does not parse; err is for files that cannot be read.
func (ca *CA) loadServerCertificate(dir string) (cert tls.Certificate, ok bool, err error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, serverCertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, false, nil
	}
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("loading server certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, serverKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, false, nil
	}
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("loading server certificate: %w", err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return tls.Certificate{}, false, nil
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil || checkKeyMatches(key, certs[0]) != nil {
		return tls.Certificate{}, false, nil
	}
	// The chain is rebuilt from the CA in memory, whatever else the file
	// holds.
	return tls.Certificate{
		Certificate: [][]byte{certs[0].Raw, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        certs[0],
	}, true, nil
}

// reusable reports whether leaf was issued by ca, lives long enough, and
// names every host.
func (ca *CA) reusable(leaf *x509.Certificate, hosts []string) bool {
	if !ca.Issued(leaf) {
		return false
	}
	if ServerCertificateDue(leaf, ca.now()) {
		return false
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(leaf.DNSNames, h) {
			return false
		}
	}
	return true
}

// ServerCertificateDue reports whether the server certificate leaf is due
// for renewal at now: LoadOrCreateServerCertificate would replace it.
func ServerCertificateDue(leaf *x509.Certificate, now time.Time) bool {
	return leaf.NotAfter.Sub(now) <= serverCertMinRemaining
}

// writeServerCertificate stores the key, then the leaf and CA as one PEM
// chain (so that tls.LoadX509KeyPair and other tools read it too). A crash
// between the two writes leaves a pair that does not match, which the next
// start replaces.
func writeServerCertificate(dir string, cert tls.Certificate) error {
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("storing server certificate: unexpected key type %T", cert.PrivateKey)
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return fmt.Errorf("storing server certificate: %w", err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, encodePEM(pemCertificate, der)...)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("storing server certificate: %w", err)
	}
	if err := datadir.WriteFile(filepath.Join(dir, serverKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("storing server certificate: %w", err)
	}
	if err := datadir.WriteFile(filepath.Join(dir, serverCertFile), chain, 0o600); err != nil {
		return fmt.Errorf("storing server certificate: %w", err)
	}
	return nil
}

// serverHosts returns the default hosts and hosts, normalized (lowercase
// names, IPs in canonical form, no brackets) and without duplicates.
func serverHosts(hosts []string) ([]string, error) {
	names := slices.Clone(defaultServerHosts)
	for _, h := range hosts {
		name, err := normalizeHost(h)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names, nil
}

func normalizeHost(h string) (string, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]")
	if ip := net.ParseIP(name); ip != nil {
		return ip.String(), nil
	}
	name = strings.ToLower(name)
	if name == "" || strings.ContainsFunc(name, notHostChar) {
		return "", fmt.Errorf("%w: %q: want a DNS name or IP address (no port, scheme or path)", ErrInvalidHost, h)
	}
	return name, nil
}

// notHostChar reports a rune no DNS name (or wildcard pattern) has; name is
// lowercase already.
func notHostChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' || r == '*')
}
