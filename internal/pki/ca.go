package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dockfleet/dockfleet/internal/datadir"
)

// CACertFile is the name of the CA certificate in the server's data dir (and
// in an agent's). It is the file the CLI's --ca-cert takes.
const CACertFile = "ca.crt"

const (
	caKeyFile  = "ca.key"
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate is taken off every NotBefore so that a peer whose clock is a
	// little behind ours accepts a certificate issued a moment ago.
	backdate = 5 * time.Minute
)

// CA is the fleet's certificate authority: it signs the server certificate
// and every node's client certificate. A CA is safe for concurrent use. The
// zero value is not usable; get one from LoadOrCreateCA.
type CA struct {
	cert        *x509.Certificate
	certPEM     []byte
	key         crypto.Signer
	pool        *x509.CertPool
	fingerprint string
	// now is time.Now; tests move it to issue certificates in the past.
	now func() time.Time
}

// LoadOrCreateCA loads the CA stored in dir (ca.crt and ca.key), or, when
// neither file exists, creates a new one there: an ECDSA P-256 key written
// with mode 0600 and a self-signed certificate valid for ten years. created
// reports which happened. A CA whose key does not match its certificate, an
// expired CA, or one file without the other is an error: replacing a CA
// silently would cut off every enrolled agent.
func LoadOrCreateCA(dir string) (ca *CA, created bool, err error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	certMissing := errors.Is(certErr, fs.ErrNotExist)
	keyMissing := errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		ca, err = createCA(dir, time.Now())
		if err != nil {
			return nil, false, fmt.Errorf("creating CA in %s: %w", dir, err)
		}
		return ca, true, nil
	case certErr != nil && !certMissing:
		return nil, false, fmt.Errorf("loading CA: %w", certErr)
	case keyErr != nil && !keyMissing:
		return nil, false, fmt.Errorf("loading CA: %w", keyErr)
	case certMissing || keyMissing:
		have, lost := certPath, keyPath
		if certMissing {
			have, lost = keyPath, certPath
		}
		return nil, false, fmt.Errorf("%w: %s exists but %s does not; restore it, or remove %s to create a new CA (every agent then has to enroll again)",
			ErrCAIncomplete, have, lost, have)
	}
	ca, err = parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	if time.Now().After(ca.cert.NotAfter) {
		return nil, false, fmt.Errorf("%w: %s expired on %s", ErrCAExpired, certPath, ca.cert.NotAfter.Format(time.DateOnly))
	}
	return ca, false, nil
}

// createCA makes a CA valid from now and writes it to dir, key first: a
// crash between the two writes leaves a lone key, which LoadOrCreateCA
// reports instead of overwriting.
func createCA(dir string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "dockfleet CA", Organization: []string{"dockfleet"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves only; an intermediate it signed by mistake
		// could not sign anything that verifies.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	certPEM := encodePEM(pemCertificate, der)
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := datadir.WriteFile(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := datadir.WriteFile(filepath.Join(dir, CACertFile), certPEM, 0o600); err != nil {
		return nil, err
	}
	return parseCA(certPEM, keyPEM)
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", CACertFile, err)
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("reading %s: %w", CACertFile, ErrNotCA)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", caKeyFile, err)
	}
	if err := checkKeyMatches(key, cert); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", caKeyFile, CACertFile, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		cert:        cert,
		certPEM:     encodePEM(pemCertificate, cert.Raw),
		key:         key,
		pool:        pool,
		fingerprint: fingerprint(cert.Raw),
		now:         time.Now,
	}, nil
}

// CertPEM returns the CA certificate in PEM form, as agents store it and the
// CLI reads it.
func (ca *CA) CertPEM() []byte { return slices.Clone(ca.certPEM) }

// Pool returns a new pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool.Clone() }

// Fingerprint returns the lowercase hex SHA-256 of the CA certificate's DER
// encoding, the value enrollment tokens carry.
func (ca *CA) Fingerprint() string { return ca.fingerprint }

// issue signs tmpl for pub, valid from now for ttl but never past the CA's
// own expiry: a leaf that outlives its CA would only look valid.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTTL, ttl)
	}
	now := ca.now()
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	// A nil SerialNumber makes CreateCertificate pick a random one.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing issued certificate: %w", err)
	}
	return cert, nil
}
