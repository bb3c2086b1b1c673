package restapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

const goodSpec = `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: hello:v1}
`

// newTestHandler makes a handler of real parts on a new store, its
// controller not running, and returns it with an admin API token.
func newTestHandler(t *testing.T) (*Handler, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "dockfleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, _, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, id, hash := pki.NewAPIToken()
	if err := st.CreateAPIToken(ctx, api.APIToken{ID: id, Name: "admin", Kind: api.TokenBootstrap, Role: "admin", Project: "*"}, hash); err != nil {
		t.Fatal(err)
	}
	return newHandlerOn(t, st, ca, nil), tok
}

// newHandlerOn makes a handler of real parts on st, its controller not
// running; clock nil is the real one.
func newHandlerOn(t testing.TB, st store.Store, ca *pki.CA, clock clockwork.Clock) *Handler {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	live, err := liveness.New(ctx, st, liveness.Config{HeartbeatInterval: 5 * time.Second, MissedHeartbeats: 3, Clock: clock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	out := fanout.New(clock)
	ctl := controller.New(st, live, out, controller.Config{RescheduleAfter: time.Minute, PrePullParallelism: 1,
		ImagePolicy: spec.ImagePolicyPinFromNodes, Clock: clock, Logger: log})
	gate, err := agentsvc.LoadGate(ctx, st, log)
	if err != nil {
		t.Fatal(err)
	}
	return New(Deps{Store: st, Logger: log, CA: oneRoot{ca}, Gate: gate, Live: live, Out: out, Ctl: ctl,
		Revoked: func(string) {}, Removed: func(string) {}, Events: NewEventBell(), MaxTokenTTL: DefaultMaxTokenTTL,
		ImagePolicy: spec.ImagePolicyPinFromNodes, Resolve: testenv.NoRegistry, Clock: clock})
}

// oneRoot is an Authority of one root that starts rotations but never
// ends one: the handler's tests check who may call the CA endpoints; the
// server's tests rotate a real CA (server.TestCARotation).
type oneRoot struct{ ca *pki.CA }

func (o oneRoot) TokenFingerprint() string { return o.ca.Fingerprint() }
func (o oneRoot) Status(context.Context) (api.CA, error) {
	return api.CA{TokenFingerprint: o.ca.Fingerprint()}, nil
}
func (o oneRoot) Rotate(context.Context) (api.CA, error) { return o.Status(context.Background()) }
func (o oneRoot) SignUser(csrDER []byte, user string, ttl time.Duration) ([]byte, error) {
	return o.ca.SignUser(csrDER, user, ttl)
}
func (o oneRoot) Finish(context.Context, bool) (api.CA, error) {
	return api.CA{}, fmt.Errorf("%w: no rotation is under way", ErrCAState)
}

// An apply that finds every apply slot taken for applyWait is refused with
// 503, saying the server is busy, and stores nothing.
func TestApplyWhenBusy(t *testing.T) {
	old := applyWait
	applyWait = 50 * time.Millisecond
	t.Cleanup(func() { applyWait = old })
	s, tok := newTestHandler(t)
	for range maxApplies {
		s.applies <- struct{}{}
	}
	req := httptest.NewRequest("POST", "/v1/apply", strings.NewReader(goodSpec))
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "the server is busy") || rec.Header().Get("Retry-After") == "" {
		t.Errorf("apply with every slot taken: %d %s (Retry-After %q); want 503 saying the server is busy, with Retry-After",
			rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	<-s.applies // one slot frees: the next apply goes through
	req = httptest.NewRequest("POST", "/v1/apply", strings.NewReader(goodSpec))
	req.Header.Set("Authorization", "Bearer "+tok)
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("apply with a slot free: %d %s; want 200", rec.Code, rec.Body)
	}
}
