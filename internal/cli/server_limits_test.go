package cli

import (
	"strings"
	"testing"
)

func TestServerLimitFlagsMustBePositive(t *testing.T) {
	tests := []struct {
		flag, value, want string
	}{
		{"--agent-source-rate", "0", "agent source rate 0: must be positive (--agent-source-rate)"},
		{"--agent-message-rate", "-1", "agent message rate -1: must be positive (--agent-message-rate)"},
		{"--agent-source-burst", "0", "agent source burst 0: must be at least 1 (--agent-source-burst)"},
		{"--agent-message-burst", "0", "agent message burst 0: must be at least 1 (--agent-message-burst)"},
		{"--api-source-rate", "0", "API source rate 0: must be positive (--api-source-rate)"},
		{"--api-source-burst", "-1", "API source burst -1: must be at least 1 (--api-source-burst)"},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, "", "server", "--data-dir", t.TempDir(), tt.flag, tt.value)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("server %s %s: exit %d, stderr %q; want %d and %q", tt.flag, tt.value, r.code, r.stderr, exitUsage, tt.want)
		}
	}
}
