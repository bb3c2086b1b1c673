package agent

import "testing"

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
