package server

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestFDLimitWarning(t *testing.T) {
	tests := []struct {
		name                string
		limit               uint64
		enrolled, expected  int
		warn                bool
		wantLimit, wantNeed string
	}{
		{name: "room for the enrolled nodes", limit: 20000, enrolled: 18000},
		{name: "exactly enough", limit: 20000, enrolled: 19000},
		{name: "enrolled nodes over the limit", limit: 20000, enrolled: 19001, warn: true, wantLimit: "limit=20000", wantNeed: "need=20001"},
		{name: "expected agents over the limit", limit: 20000, enrolled: 10, expected: 25000, warn: true, wantLimit: "limit=20000", wantNeed: "need=26000"},
		{name: "enrolled nodes count when more than expected", limit: 4096, enrolled: 5000, expected: 100, warn: true, wantLimit: "limit=4096", wantNeed: "need=6000"},
		{name: "a fresh server under a default 1024", limit: 1024},
		{name: "the margin alone over a tiny limit", limit: 256, warn: true, wantLimit: "limit=256", wantNeed: "need=1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			warnFDLimit(slog.New(slog.NewTextHandler(&buf, nil)), tt.limit, tt.enrolled, tt.expected)
			out := buf.String()
			if !tt.warn {
				if out != "" {
					t.Errorf("logged %q; want nothing", out)
				}
				return
			}
			// The warning says the limit, the need and how to raise it.
			for _, want := range []string{"level=WARN", tt.wantLimit, tt.wantNeed, "LimitNOFILE=", "ulimit -n", "--ulimit nofile=", "docs/operations.md"} {
				if !strings.Contains(out, want) {
					t.Errorf("warning lacks %q: %s", want, out)
				}
			}
		})
	}
}

// TestNewWarnsOfLowFDLimit starts a server expecting more agents than any
// open-file limit allows: it must say so at start, and still start.
func TestNewWarnsOfLowFDLimit(t *testing.T) {
	limit, ok := openFileLimit()
	if !ok || limit > 1<<40 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no open-file limit (RLIMIT_NOFILE) to read or reach (read: %v, limit %d); CI machines have one of 20,000", ok, limit)
		}
		t.Skip("no open-file limit to reach")
	}
	for _, tt := range []struct {
		expected int
		warn     bool
	}{
		{expected: int(limit), warn: true}, // the margin on top is over the limit
		{expected: 0, warn: limit < fdNeed(0)},
	} {
		var buf bytes.Buffer
		s, err := New(context.Background(), testConfig(t, Config{ExpectedAgents: tt.expected, Logger: slog.New(slog.NewTextHandler(&buf, nil))}))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if got := strings.Contains(buf.String(), "open-file limit too low"); got != tt.warn {
			t.Errorf("expecting %d agents with a limit of %d: warned %v; want %v; log:\n%s", tt.expected, limit, got, tt.warn, buf.String())
		}
	}
}
