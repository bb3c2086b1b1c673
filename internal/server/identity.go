package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/authz"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/seal"
	"github.com/dockfleet/dockfleet/internal/store"
)

// A server's identity is what every replica of one store shares: the CA
// agents and users trust, and the bootstrap admin token. Both live in the
// store, sealed with the key of the key file every replica is given
// (package seal), so that a replica started anywhere, with a new data dir,
// is the same server as the others. What stays per replica is in its data
// dir: the server certificate for its own hosts (issued by the shared CA),
// a copy of ca.crt for users, and admin.token.

// DefaultKeyFile is the key file's name in the data dir when
// Config.KeyFile is not set. (server.key is the server certificate's key.)
const DefaultKeyFile = "store.key"

// The names of the sealed secrets in the store. A blob opens only under
// its own name.
const (
	sealedCA         = "ca"
	sealedAdminToken = "admin-token"
)

// keyFileDoc is where an operator reads about the key file.
const keyFileDoc = "docs/operations.md#key-file"

// sealedStore is the part of the store that start-up reads and writes the
// shared identity with.
type sealedStore interface {
	PutSealedIfAbsent(ctx context.Context, sec store.Sealed) (store.Sealed, bool, error)
	GetSealed(ctx context.Context, name string) (store.Sealed, error)
	CreateAPIToken(ctx context.Context, t api.APIToken, secretHash string) error
	GetAPIToken(ctx context.Context, id string) (api.APIToken, string, error)
}

// identity opens the key file and the CA at start. A replica that cannot
// be the same server as the others refuses before it writes anything: a
// key file that does not open the store's secrets, or a data dir whose
// CA is not the store's.
type identity struct {
	st      sealedStore
	dataDir string
	keyPath string
	log     *slog.Logger
	key     *seal.Key
}

// openKey sets id.key, the key that seals the store's secrets, from the key
// file. Without a key file, a store holding no sealed secret yet (a new
// one, or one from before sealing) gets a new key, written to the key
// file; a store holding some cannot be opened, and the error says so.
func (id *identity) openKey(ctx context.Context) error {
	key, err := seal.LoadKeyFile(id.keyPath)
	missing := errors.Is(err, fs.ErrNotExist)
	if err != nil && !missing {
		return err
	}
	// Any sealed secret names the key the store needs.
	var sealed []store.Sealed
	for _, name := range []string{sealedCA, sealedAdminToken} {
		sec, err := id.st.GetSealed(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		sealed = append(sealed, sec)
	}
	if missing {
		if len(sealed) > 0 {
			return fmt.Errorf("the store's secrets are sealed with key %s; there is no key file at %s: copy the key file of the other replicas there (or restore it from a backup), or name it with --key-file (%s)",
				sealed[0].KeyID, id.keyPath, keyFileDoc)
		}
		key, err = seal.CreateKeyFile(id.keyPath)
		if errors.Is(err, fs.ErrExist) { // made by another process meanwhile
			key, err = seal.LoadKeyFile(id.keyPath)
		}
		if err != nil {
			return err
		}
		id.log.Info("created key file: back it up apart from the store, and give every server replica this same file",
			"key_file", id.keyPath, "key_id", key.ID(), "docs", keyFileDoc)
	}
	for _, sec := range sealed {
		if sec.KeyID != key.ID() {
			return id.wrongKey(sec.KeyID, key)
		}
	}
	id.key = key
	return nil
}

func (id *identity) wrongKey(storeKeyID string, key *seal.Key) error {
	return fmt.Errorf("the store's secrets are sealed with key %s; --key-file %s holds key %s: give every replica the same key file (%s)",
		storeKeyID, id.keyPath, key.ID(), keyFileDoc)
}

// open opens sec with the key, naming the key the store needs when it is
// another.
func (id *identity) open(sec store.Sealed) ([]byte, error) {
	plain, err := id.key.Open(sec.Name, sec.Blob)
	if errors.Is(err, seal.ErrWrongKey) {
		return nil, id.wrongKey(sec.KeyID, id.key)
	}
	if err != nil {
		return nil, fmt.Errorf("store secret %s: %w", sec.Name, err)
	}
	return plain, nil
}

// putIfAbsent seals plain as name unless the store has name already, and
// returns what the store holds then, opened: plain, or what another
// replica stored first.
func (id *identity) putIfAbsent(ctx context.Context, name string, plain []byte) (stored []byte, created bool, err error) {
	blob, err := id.key.Seal(name, plain)
	if err != nil {
		return nil, false, err
	}
	sec, created, err := id.st.PutSealedIfAbsent(ctx, store.Sealed{Name: name, KeyID: id.key.ID(), Blob: blob})
	if err != nil {
		return nil, false, err
	}
	if created {
		return plain, true, nil
	}
	stored, err = id.open(sec)
	return stored, false, err
}

// loadRoots returns the store's CA roots and the sealed secret they were
// read from. A store without any gets the data dir's ca.crt and ca.key, the
// CA of a server from before sealing, whose agents must keep trusting it;
// or else a new CA. The data dir's ca.crt, which users copy, is written if
// missing or of older roots; one of a root the store does not know is
// refused, as it may be what some agents trust.
func (id *identity) loadRoots(ctx context.Context) (*pki.Roots, store.Sealed, error) {
	roots, sec, err := id.storedRoots(ctx)
	if err != nil {
		return nil, store.Sealed{}, err
	}
	certPath := filepath.Join(id.dataDir, pki.CACertFile)
	onDisk, err := os.ReadFile(certPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return roots, sec, writeCACert(id.dataDir, roots)
	case err != nil:
		return nil, store.Sealed{}, fmt.Errorf("reading the CA certificate: %w", err)
	}
	fp := certFingerprint(onDisk)
	if !roots.Knows(fp) {
		return nil, store.Sealed{}, fmt.Errorf("%s is CA %s, but the store's CA is %s: this data dir is from another fleet's server. "+
			"Move %s and %s aside (keep them while agents trust that CA) to join this store's fleet, or start on the store that CA belongs to (%s)",
			certPath, fp, roots.Active().Fingerprint(), pki.CACertFile, pki.CAKeyFile, keyFileDoc)
	}
	if !bytes.Equal(onDisk, roots.BundlePEM()) {
		// The CA was rotated while this replica was away.
		if err := writeCACert(id.dataDir, roots); err != nil {
			return nil, store.Sealed{}, err
		}
		id.log.Info("wrote the store's CA roots to the data dir's copy", "file", certPath, "active", roots.Active().Fingerprint(), "rotating", roots.Rotating())
	}
	return roots, sec, nil
}

// storedRoots opens the store's CA roots, storing a CA first if it has
// none.
func (id *identity) storedRoots(ctx context.Context) (*pki.Roots, store.Sealed, error) {
	sec, err := id.st.GetSealed(ctx, sealedCA)
	if err == nil {
		plain, err := id.open(sec)
		if err != nil {
			return nil, store.Sealed{}, err
		}
		roots, err := pki.ParseRoots("the store", plain)
		return roots, sec, err
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, store.Sealed{}, err
	}
	ca, err := pki.LoadCA(id.dataDir)
	fromDir := err == nil
	if errors.Is(err, fs.ErrNotExist) {
		ca, err = pki.NewCA()
	}
	if err != nil {
		return nil, store.Sealed{}, err
	}
	plain, err := pki.NewRoots(ca).MarshalPEM()
	if err != nil {
		return nil, store.Sealed{}, err
	}
	_, created, err := id.putIfAbsent(ctx, sealedCA, plain)
	if err != nil {
		return nil, store.Sealed{}, fmt.Errorf("storing the CA: %w", err)
	}
	if !created { // another replica stored its CA first
		return id.storedRoots(ctx)
	}
	keyPath := filepath.Join(id.dataDir, pki.CAKeyFile)
	if fromDir {
		// Never deleted here: it is the operator's, and may be the only
		// copy outside a store whose key file is not yet backed up.
		id.log.Info("sealed the data dir's CA in the store; every replica now shares it, and the key file is not needed in the data dir: "+
			"delete it once the store and the key file are backed up", "fingerprint", ca.Fingerprint(), "ca_key_file", keyPath, "docs", keyFileDoc)
	} else {
		id.log.Info("created certificate authority", "ca_file", filepath.Join(id.dataDir, pki.CACertFile), "fingerprint", ca.Fingerprint())
	}
	return id.storedRoots(ctx)
}

// certFingerprint is the fingerprint of the first certificate in PEM data,
// as pki.CA.Fingerprint gives it; "" if data holds none.
func certFingerprint(data []byte) string {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return ""
		}
		if block.Type == "CERTIFICATE" {
			sum := sha256.Sum256(block.Bytes)
			return hex.EncodeToString(sum[:])
		}
	}
}

// adminToken returns the bootstrap admin API token, made once per store:
// the store's, or, if it has none, the data dir's admin.token of a server
// from before sealing, or else a new one. Its hash is an API token of the
// store like any other.
func (id *identity) adminToken(ctx context.Context, tokPath string) (string, error) {
	sec, err := id.st.GetSealed(ctx, sealedAdminToken)
	var tok string
	switch {
	case err == nil:
		plain, err := id.open(sec)
		if err != nil {
			return "", err
		}
		tok = string(plain)
	case errors.Is(err, store.ErrNotFound):
		tok = id.fileToken(ctx, tokPath)
		fromFile := tok != ""
		if !fromFile {
			tok, _, _ = pki.NewAPIToken()
		}
		stored, created, err := id.putIfAbsent(ctx, sealedAdminToken, []byte(tok))
		if err != nil {
			return "", fmt.Errorf("storing the admin token: %w", err)
		}
		tok = string(stored)
		if created && fromFile {
			id.log.Info("sealed the data dir's admin token in the store; every replica now writes it to its admin.token", "file", tokPath)
		}
	default:
		return "", err
	}
	tid, secret, err := pki.ParseAPIToken(tok)
	if err != nil {
		return "", fmt.Errorf("the store's admin token: %w", err)
	}
	// Created by the first replica, or by an older server; a crash
	// between sealing and here leaves it to the next start.
	err = id.st.CreateAPIToken(ctx, api.APIToken{ID: tid, Name: "admin", Kind: api.TokenBootstrap, Role: authz.Admin,
		Project: authz.AllProjects, CreatedAt: time.Now().UTC()}, pki.HashSecret(secret))
	if errors.Is(err, store.ErrExists) {
		var hash string
		if _, hash, err = id.st.GetAPIToken(ctx, tid); err == nil && !pki.SecretMatches(secret, hash) {
			err = fmt.Errorf("API token %s is in the store with another secret than the sealed admin token's", tid)
		}
	}
	if err != nil {
		return "", fmt.Errorf("storing the admin token: %w", err)
	}
	if t, _, err := id.st.GetAPIToken(ctx, tid); err == nil && !t.ExpiresAt.IsZero() {
		// Revoked by an admin (docs/access.md): it stays so.
		return "", errBootstrapRetired
	}
	return tok, nil
}

// errBootstrapRetired says the bootstrap admin token was revoked: no
// start writes it again.
var errBootstrapRetired = errors.New("the bootstrap admin token was revoked")

// fileToken is the API token in the file at path if the store knows it,
// else "".
func (id *identity) fileToken(ctx context.Context, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if !id.validToken(ctx, string(data)) {
		return ""
	}
	return string(bytes.TrimSpace(data))
}

// validToken reports whether tok is an API token of the store.
func (id *identity) validToken(ctx context.Context, tok string) bool {
	tid, secret, err := pki.ParseAPIToken(tok)
	if err != nil {
		return false
	}
	_, hash, err := id.st.GetAPIToken(ctx, tid)
	return err == nil && pki.SecretMatches(secret, hash)
}

// loadIdentity opens the key file, the shared CA and admin token, and
// this replica's server certificate, and writes the data dir's copies.
func (s *Server) loadIdentity(ctx context.Context, st sealedStore) error {
	s.keyFile = s.cfg.KeyFile
	if s.keyFile == "" {
		s.keyFile = filepath.Join(s.cfg.DataDir, DefaultKeyFile)
	}
	id := &identity{st: st, dataDir: s.cfg.DataDir, keyPath: s.keyFile, log: s.log}
	if err := id.openKey(ctx); err != nil {
		return err
	}
	roots, sec, err := id.loadRoots(ctx)
	if err != nil {
		return fmt.Errorf("loading CA: %w", err)
	}
	tok, err := id.adminToken(ctx, s.adminTok)
	retired := errors.Is(err, errBootstrapRetired)
	if err != nil && !retired {
		return err
	}
	hosts := append(serverHosts(), s.cfg.Hosts...)
	cert, err := pki.LoadOrCreateServerCertificate(s.cfg.DataDir, roots.Serving(), hosts)
	if err != nil {
		return fmt.Errorf("loading server certificate: %w", err)
	}
	if retired {
		if err := os.Remove(s.adminTok); err == nil {
			s.log.Info("the bootstrap admin token was revoked: removed admin.token", "file", s.adminTok)
		}
	} else if err := s.writeAdminToken(ctx, id, tok); err != nil {
		return err
	}
	s.ca, s.cert, s.hosts = pki.NewAuthority(roots), pki.NewServerCert(cert), hosts
	s.caKeeper = &caKeeper{st: s.store, id: id, roots: s.ca, cert: s.cert, dataDir: s.cfg.DataDir, hosts: hosts, log: s.log, blob: sec.Blob}
	return nil
}
