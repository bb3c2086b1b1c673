package cli

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

func TestTokenList(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/tokens", http.StatusOK, []api.EnrollToken{
		{ID: "tok-active", MaxUses: 3, Uses: 1, ExpiresAt: testNow.Add(59 * time.Minute), Labels: map[string]string{"site": "a"}},
		{ID: "tok-forever", Uses: 2},
		{ID: "tok-expired", MaxUses: 1, ExpiresAt: testNow.Add(-2 * time.Hour)},
		{ID: "tok-revoked", Revoked: true, ExpiresAt: testNow.Add(-2 * time.Hour)},
		{ID: "tok-used", MaxUses: 2, Uses: 2},
	})
	r := runCLI(t, nil, "", f.args("token", "list")...)
	checkOutput(t, r, exitOK, lines(
		"ID            LABELS   USES   EXPIRES   STATUS",
		"tok-active    site=a   1/3    in 59m    active",
		"tok-forever   -        2/∞    never     active",
		"tok-expired   -        0/1    2h ago    expired",
		"tok-revoked   -        0/∞    2h ago    revoked",
		"tok-used      -        2/2    never     used up",
	))
}

func TestTokenCreate(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/tokens", http.StatusCreated, api.EnrollToken{ID: "tok-1", MaxUses: 5, Token: "dft_secret", ExpiresAt: testNow.Add(24 * time.Hour)})
	r := runCLI(t, nil, "", f.args("token", "create", "--ttl", "24h", "--uses", "5", "--labels", "site=a,tier=edge")...)
	checkOutput(t, r, exitOK, "dft_secret\n")
	if strings.Contains(r.stderr, "dft_secret") {
		t.Errorf("the hint puts the token on a command line, where ps shows it: %q", r.stderr)
	}
	for _, want := range []string{"Token tok-1: expires in 24h, 5 uses.", "dockfleet agent --server 127.0.0.1:7401 --token-file /etc/dockfleet/agent.token"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not say %q", r.stderr, want)
		}
	}
	want := `{"ttl":"24h0m0s","uses":5,"labels":{"site":"a","tier":"edge"}}`
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Body != want {
		t.Errorf("requests %+v; want one with body %s", reqs, want)
	}
}

func TestTokenCreateDefaultsToOneUseWithinTheHour(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/tokens", http.StatusCreated, api.EnrollToken{ID: "tok-1", Token: "dft_secret", MaxUses: 1, ExpiresAt: testNow.Add(time.Hour)})
	r := runCLI(t, nil, "", f.args("token", "create")...)
	checkOutput(t, r, exitOK, "dft_secret\n")
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Body != `{"ttl":"1h0m0s","uses":1}` {
		t.Errorf("requests %+v; want one asking for one use within 1h", reqs)
	}
	if !strings.Contains(r.stderr, "expires in 1h, one use") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestTokenRevoke(t *testing.T) {
	f := newFakeAPI(t)
	f.on("DELETE /v1/tokens/tok-1", http.StatusNoContent, nil)
	r := runCLI(t, nil, "", f.args("token", "revoke", "tok-1")...)
	checkOutput(t, r, exitOK, "token tok-1 revoked\n")
}

func TestTokenCreateForNode(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/tokens", http.StatusCreated, api.EnrollToken{ID: "tok-1", MaxUses: 1, Node: "web-1", Token: "dft_secret"})
	r := runCLI(t, nil, "", f.args("token", "create", "--uses", "1", "--node", "web-1")...)
	checkOutput(t, r, exitOK, "dft_secret\n")
	if want := "--token-file /etc/dockfleet/agent.token --name web-1 "; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not say %q", r.stderr, want)
	}
	want := `{"ttl":"1h0m0s","uses":1,"node":"web-1"}`
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Body != want {
		t.Errorf("requests %+v; want one with body %s", reqs, want)
	}
}

func TestTokenCreateAgentLabels(t *testing.T) {
	f := newFakeAPI(t)
	f.on("POST /v1/tokens", http.StatusCreated, api.EnrollToken{ID: "tok-1", Token: "dft_secret"})
	r := runCLI(t, nil, "", f.args("token", "create", "--labels", "site=a", "--agent-labels", "role,zone")...)
	checkOutput(t, r, exitOK, "dft_secret\n")
	want := `{"ttl":"1h0m0s","uses":1,"labels":{"site":"a"},"agentLabels":["role","zone"]}`
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Body != want {
		t.Errorf("requests %+v; want one with body %s", reqs, want)
	}
}
