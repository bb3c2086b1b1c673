package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

// CAKeyFile is the name of the CA's private key in a server's data dir, as
// servers before the key was sealed in the store kept it (LoadCA).
const CAKeyFile = "ca.key"

const (
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate is taken off every NotBefore so that a peer whose clock is a
	// little behind ours accepts a certificate issued a moment ago.
	backdate = 5 * time.Minute
)

// CA is the fleet's certificate authority: it signs the server certificate
// and every node's client certificate. A CA is safe for concurrent use. The
// zero value is not usable; get one from NewCA, ParseCA, LoadCA or
// LoadOrCreateCA.
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
	ca, err = LoadCA(dir)
	if errors.Is(err, fs.ErrNotExist) {
		ca, err = createCA(dir, time.Now())
		if err != nil {
			return nil, false, fmt.Errorf("creating CA in %s: %w", dir, err)
		}
		return ca, true, nil
	}
	return ca, false, err
}

// LoadCA loads the CA stored in dir (ca.crt and ca.key). When neither file
// exists the error wraps fs.ErrNotExist; one without the other is
// ErrCAIncomplete, and an expired CA ErrCAExpired.
func LoadCA(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	certMissing := errors.Is(certErr, fs.ErrNotExist)
	keyMissing := errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		return nil, fmt.Errorf("loading CA: no %s and no %s in %s: %w", CACertFile, CAKeyFile, dir, fs.ErrNotExist)
	case certErr != nil && !certMissing:
		return nil, fmt.Errorf("loading CA: %w", certErr)
	case keyErr != nil && !keyMissing:
		return nil, fmt.Errorf("loading CA: %w", keyErr)
	case certMissing || keyMissing:
		have, lost := certPath, keyPath
		if certMissing {
			have, lost = keyPath, certPath
		}
		return nil, fmt.Errorf("%w: %s exists but %s does not; restore it, or remove %s to create a new CA (every agent then has to enroll again)",
			ErrCAIncomplete, have, lost, have)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	if err := ca.checkExpiry(certPath); err != nil {
		return nil, err
	}
	return ca, nil
}

func (ca *CA) checkExpiry(where string) error {
	if ca.now().After(ca.cert.NotAfter) {
		return fmt.Errorf("%w: %s expired on %s", ErrCAExpired, where, ca.cert.NotAfter.Format(time.DateOnly))
	}
	return nil
}

// createCA makes a CA valid from now and writes it to dir, key first: a
// crash between the two writes leaves a lone key, which LoadOrCreateCA
// reports instead of overwriting.
func createCA(dir string, now time.Time) (*CA, error) {
	ca, err := newCA(now)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKeyPEM(ca.key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := datadir.WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := datadir.WriteFile(filepath.Join(dir, CACertFile), ca.certPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// NewCA makes a new CA in memory: an ECDSA P-256 key and a self-signed
// certificate valid for ten years. Nothing is written; MarshalPEM gives
// what to keep.
func NewCA() (*CA, error) {
	ca, err := newCA(time.Now())
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	return ca, nil
}

func newCA(now time.Time) (*CA, error) {
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
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return parseCA(encodePEM(pemCertificate, der), keyPEM)
}

// MarshalPEM returns the CA whole, as ParseCA reads it: its certificate and
// then its private key (PKCS #8), in PEM. It is secret.
func (ca *CA) MarshalPEM() ([]byte, error) {
	keyPEM, err := marshalKeyPEM(ca.key)
	if err != nil {
		return nil, err
	}
	return append(ca.CertPEM(), keyPEM...), nil
}

// ParseCA reads a CA from PEM data holding its certificate and its private
// key, as MarshalPEM writes them. Like LoadCA it refuses a key that does not
// match the certificate, a certificate that is not a CA, and an expired CA;
// where names the data's origin in errors.
func ParseCA(where string, data []byte) (*CA, error) {
	var certPEM, keyPEM []byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemCertificate:
			certPEM = append(certPEM, pem.EncodeToMemory(block)...)
		case pemPrivateKey:
			if keyPEM == nil {
				keyPEM = pem.EncodeToMemory(block)
			}
		}
	}
	if keyPEM == nil {
		return nil, fmt.Errorf("reading CA from %s: %w: no %s block", where, ErrInvalidPEM, pemPrivateKey)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reading CA from %s: %w", where, err)
	}
	if err := ca.checkExpiry(where); err != nil {
		return nil, err
	}
	return ca, nil
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
		return nil, fmt.Errorf("reading %s: %w", CAKeyFile, err)
	}
	if err := checkKeyMatches(key, cert); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", CAKeyFile, CACertFile, err)
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

// Issued reports whether the CA issued cert: its issuer is the CA's
// subject and its signature the CA's.
func (ca *CA) Issued(cert *x509.Certificate) bool { return signedBy(cert, ca.cert) }

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
