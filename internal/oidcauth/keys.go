package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxKeySetSize bounds the key set document read from the issuer.
const maxKeySetSize = 1 << 20

// asymmetricAlgs are the algorithms a key set may verify: go-oidc has
// already refused any other (and "none" and HMAC) before it asks.
var asymmetricAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// keySet is the issuer's signing keys, from its jwks_uri: go-oidc's
// oidc.KeySet, which its IDTokenVerifier asks to check a token's
// signature before it checks the claims.
//
// It fetches the keys when those it knows do not verify a token (the
// first token, a new key after a rotation), at most once every RetryAfter
// and one fetch at a time, and remembers a failure as long: forged tokens
// cost the issuer at most a request every RetryAfter. Its errors match
// ErrUnavailable (the keys could not be fetched) or ErrBadSignature.
// go-oidc's own RemoteKeySet fetches after every signature that fails,
// and says which of the two happened only in text.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu   sync.Mutex
	keys []jose.JSONWebKey
	// fetching is closed when the fetch under way ends; nil when none is.
	fetching chan struct{}
	// fetchedAt is when the last fetch ended, fetchErr its error.
	fetchedAt time.Time
	fetchErr  error
}

// VerifySignature returns the payload of jwt if one of the issuer's keys
// verifies its signature.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.verify(ctx, jwt)
	if p, ok := ctx.Value(sigErrKey{}).(*error); ok {
		// go-oidc flattens this error to text: Verify reads it here.
		*p = err
	}
	return payload, err
}

func (k *keySet) verify(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, asymmetricAlgs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: %d signatures, want 1", ErrMalformed, len(jws.Signatures))
	}
	kid := jws.Signatures[0].Header.KeyID
	known := k.candidates(kid)
	if payload, ok := verifyWith(jws, known); ok {
		return payload, nil
	}
	// The keys known do not verify it: the issuer may have rotated them
	// since, so ask for its keys again (refresh does at most once every
	// RetryAfter: forged tokens cost the issuer next to nothing).
	if err := k.refresh(ctx); err != nil {
		if len(known) > 0 {
			return nil, fmt.Errorf("%w: the issuer's key does not verify it", ErrBadSignature)
		}
		return nil, err
	}
	keys := k.candidates(kid)
	if payload, ok := verifyWith(jws, keys); ok {
		return payload, nil
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: signed with a key (kid %s) the issuer does not list", ErrBadSignature, quote(kid))
	}
	return nil, fmt.Errorf("%w: the issuer's key does not verify it", ErrBadSignature)
}

func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey) ([]byte, bool) {
	for _, key := range keys {
		if payload, err := jws.Verify(&key); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// candidates returns the keys that may have signed a token naming kid:
// the key of that ID, or every key when the token names none.
func (k *keySet) candidates(kid string) []jose.JSONWebKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	var keys []jose.JSONWebKey
	for _, key := range k.keys {
		if kid == "" || key.KeyID == kid {
			keys = append(keys, key)
		}
	}
	return keys
}

// refresh fetches the keys unless a fetch ended less than RetryAfter ago;
// then it returns that fetch's error. Callers that come while a fetch is
// under way wait for it.
func (k *keySet) refresh(ctx context.Context) error {
	for {
		k.mu.Lock()
		if fetching := k.fetching; fetching != nil {
			k.mu.Unlock()
			select {
			case <-fetching:
				continue
			case <-ctx.Done():
				return fmt.Errorf("%w: waiting for the keys of the issuer: %w", ErrUnavailable, ctx.Err())
			}
		}
		if !k.fetchedAt.IsZero() && k.now().Before(k.fetchedAt.Add(RetryAfter)) {
			err := k.fetchErr
			k.mu.Unlock()
			return err
		}
		fetching := make(chan struct{})
		k.fetching = fetching
		k.mu.Unlock()

		keys, err := k.fetch(ctx)

		k.mu.Lock()
		k.fetching = nil
		close(fetching)
		if err == nil || ctx.Err() == nil {
			// A caller that gave up says nothing about the issuer.
			k.fetchedAt, k.fetchErr = k.now(), err
			if err == nil {
				k.keys = keys
			}
		}
		k.mu.Unlock()
		return err
	}
}

// fetch reads the key set document: the signing keys of the types go-jose
// knows, others skipped.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: the issuer's jwks_uri %s: %w", ErrUnavailable, quote(k.url), err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetching the issuer's keys: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: fetching the issuer's keys from %s: %w", ErrUnavailable, k.url, err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: fetching the issuer's keys from %s: %s", ErrUnavailable, k.url, resp.Status)
	case len(body) > maxKeySetSize:
		return nil, fmt.Errorf("%w: the issuer's keys at %s are over %d bytes", ErrUnavailable, k.url, maxKeySetSize)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%w: the issuer's keys at %s are not a JSON key set: %w", ErrUnavailable, k.url, err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("%w: a key of the issuer at %s: %w", ErrUnavailable, k.url, err)
		}
		if key.Use != "" && key.Use != "sig" || !key.IsPublic() {
			continue // an encryption key, or a symmetric one
		}
		keys = append(keys, key)
	}
	return keys, nil
}
