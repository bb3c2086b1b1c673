package agentsvc

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/pki/pkitest"
	"github.com/dockfleet/dockfleet/internal/store/storetest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// An agent that gives up waiting for its enrollment (a crowd of agents
// enrolling at once on a loaded server) is told Canceled, and the server
// logs no ERROR line for it: in a 40,000-agent run these came by the
// dozen and read as server faults. The enrollment is not counted: the
// agent's retry with the same one-use token succeeds.
func TestEnrollAbandonedByTheAgentIsNoServerError(t *testing.T) {
	ctx := t.Context()
	st := storetest.SQLiteWithNodes(t)
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	id, secret := pki.NewTokenID(), pki.NewSecret()
	if err := st.CreateEnrollToken(ctx, api.EnrollToken{ID: id, MaxUses: 1, ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()}, pki.HashSecret(secret)); err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a := New(Deps{Store: st, CA: pki.NewAuthority(pki.NewRoots(ca)), Limits: NewLimits(LimitsConfig{}, log), Logger: log,
		Enrolled: func(api.Node) {}, CertTTL: time.Hour})
	_, csr := pkitest.NodeCSR(t)
	req := &agentproto.EnrollRequest{ProtocolVersion: agentproto.Version, Token: pki.FormatEnrollToken(ca.Fingerprint(), id, secret),
		Name: "host-1", Csr: csr}

	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Enroll(gone, req); status.Code(err) != codes.Canceled {
		t.Fatalf("enrollment by an agent that went away: got %v, want code Canceled", err)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("an enrollment the agent abandoned was logged as a server error:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "enrollment abandoned") {
		t.Errorf("the abandoned enrollment was not logged:\n%s", logs.String())
	}

	res, err := a.Enroll(ctx, req)
	if err != nil {
		t.Fatalf("the agent's retry: %v", err)
	}
	if res.NodeId == "" || len(res.Certificate) == 0 {
		t.Fatalf("the agent's retry got no node ID or certificate: %+v", res)
	}
}
