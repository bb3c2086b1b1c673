package restapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/store"
)

var errUnauthorized = errors.New("missing or invalid API token: pass one with --token or DOCKFLEET_TOKEN")

// authenticate checks the bearer token of r.
func (s *Handler) authenticate(r *http.Request) error {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return errUnauthorized
	}
	id, secret, err := pki.ParseAPIToken(strings.TrimSpace(tok))
	if err != nil {
		return errUnauthorized
	}
	want, err := s.store.APITokenHash(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return errUnauthorized
	}
	if err != nil {
		return err
	}
	if !pki.SecretMatches(secret, want) {
		return errUnauthorized
	}
	return nil
}
