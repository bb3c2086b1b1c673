package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/pki"
)

// Enrollment gives up on a server it does not trust, and retries one that
// cut the handshake short, as a server over its limit for the agent's
// source address does.
func TestDistrusted(t *testing.T) {
	const prefix = `connection error: desc = "transport: authentication handshake failed: `
	tests := []struct {
		msg  string
		want bool
	}{
		{prefix + `pki: server CA fingerprint does not match the enrollment token: got ab; want cd"`, true},
		{prefix + `tls: failed to verify certificate: x509: certificate signed by unknown authority"`, true},
		{prefix + `EOF"`, false},
		{prefix + `read tcp 127.0.0.2:40000->127.0.0.1:7401: read: connection reset by peer"`, false},
		{prefix + `write tcp 127.0.0.2:40000->127.0.0.1:7401: write: broken pipe"`, false},
		{`connection error: desc = "transport: error while dialing: dial tcp 127.0.0.1:7401: connect: connection refused"`, false},
	}
	for _, tt := range tests {
		if got := distrusted(tt.msg); got != tt.want {
			t.Errorf("distrusted(%q) = %v; want %v", tt.msg, got, tt.want)
		}
	}
}

func TestRefusalHint(t *testing.T) {
	valid := &pki.Identity{NotAfter: time.Now().Add(time.Hour)}
	expired := &pki.Identity{NotAfter: time.Now().Add(-time.Hour)}
	refused := errors.New(`rpc error: code = Unavailable desc = connection error: desc = "error reading server preface: remote error: tls: bad certificate"`)
	for _, tt := range []struct {
		id   *pki.Identity
		err  error
		want string
	}{
		{valid, errors.New("connection refused"), ""},
		{valid, refused, "revoked or removed"},
		{expired, refused, "token create --node edge-1"},
	} {
		if got := refusalHint(tt.err, tt.id, "edge-1"); !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("hint for %v with a certificate expiring %v = %q; want it to say %q", tt.err, tt.id.NotAfter, got, tt.want)
		}
	}
}
