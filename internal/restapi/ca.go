package restapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

// Authority is the fleet's CA as the API shows and changes it (package
// server's, the same through every replica of a store).
type Authority interface {
	// TokenFingerprint is the CA fingerprint new enrollment tokens carry:
	// that of the root an enrolling agent verifies the server with.
	TokenFingerprint() string
	// Status describes the CA roots and which nodes hold certificates of
	// which.
	Status(ctx context.Context) (api.CA, error)
	// Rotate starts a rotation to a new root; Finish ends one, retiring
	// the old root, and with force even while nodes hold certificates of
	// it. Both return an error wrapping ErrCAState when the CA's state
	// does not allow it.
	Rotate(ctx context.Context) (api.CA, error)
	Finish(ctx context.Context, force bool) (api.CA, error)
	// SignUser issues an API client certificate of user for the key of
	// the DER CSR csrDER, valid for ttl.
	SignUser(csrDER []byte, user string, ttl time.Duration) ([]byte, error)
}

// ErrCAState is wrapped by an Authority's refusal of a change the CA's
// state does not allow now (a rotation while one runs, a finish while
// nodes hold certificates of the retiring root): the API answers 409
// Conflict with its message.
var ErrCAState = errors.New("restapi: the CA's state does not allow this now")

// caError makes an Authority's refusal a conflict.
func caError(err error) error {
	if errors.Is(err, ErrCAState) {
		return conflict{err.Error()}
	}
	return err
}

func (s *Handler) getCA(w http.ResponseWriter, r *http.Request) error {
	st, err := s.ca.Status(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// rotateCA starts a CA rotation (POST /v1/ca/rotate).
func (s *Handler) rotateCA(w http.ResponseWriter, r *http.Request) error {
	st, err := s.ca.Rotate(r.Context())
	if err != nil {
		return caError(err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// finishCA ends a CA rotation (POST /v1/ca/finish, ?force=true to retire
// the old root while nodes still hold certificates of it).
func (s *Handler) finishCA(w http.ResponseWriter, r *http.Request) error {
	force := r.URL.Query().Get("force") == "true"
	st, err := s.ca.Finish(r.Context(), force)
	if err != nil {
		return caError(err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
