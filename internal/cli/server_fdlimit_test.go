package cli

import (
	"strings"
	"testing"
)

func TestServerFDLimitExpectedAgentsNotNegative(t *testing.T) {
	r := runCLI(t, nil, "", "server", "--data-dir", t.TempDir(), "--expected-agents", "-1")
	if want := "expected agents -1: must be 0 or more (--expected-agents)"; r.code != exitUsage || !strings.Contains(r.stderr, want) {
		t.Errorf("server --expected-agents -1: exit %d, stderr %q; want %d and %q", r.code, r.stderr, exitUsage, want)
	}
}
