package server

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDefaultConfigIsValid: the defaults, with the data dir they lack,
// pass Validate, and are what New gives a zero Config.
func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	got := Config{DataDir: cfg.DataDir}.withDefaults()
	if got.HeartbeatInterval != cfg.HeartbeatInterval || got.MissedHeartbeats != cfg.MissedHeartbeats ||
		got.RescheduleAfter != cfg.RescheduleAfter || got.MaxEvents != cfg.MaxEvents || got.ImagePolicy != cfg.ImagePolicy ||
		got.Resolve == nil || got.Logger == nil {
		t.Errorf("a zero Config with defaults = %+v; want DefaultConfig's values", got)
	}
}

// TestNewRefusesInvalidConfig: a value set but wrong is an error that
// names the field, the value and the flag; it never becomes a default.
func TestNewRefusesInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative heartbeat", Config{HeartbeatInterval: -time.Second}, "heartbeat interval -1s: must be positive (--heartbeat-interval)"},
		{"negative missed heartbeats", Config{MissedHeartbeats: -1}, "missed heartbeats -1: must be at least 1 (--missed-heartbeats)"},
		{"negative reschedule", Config{RescheduleAfter: -time.Minute}, "reschedule after -1m0s: must be positive (--reschedule-after)"},
		{"negative source rate", Config{AgentSourceRate: -1}, "agent source rate -1: must be positive (--agent-source-rate)"},
		{"negative API source rate", Config{APISourceRate: -1}, "API source rate -1: must be positive (--api-source-rate)"},
		{"negative expected agents", Config{ExpectedAgents: -1}, "expected agents -1: must be 0 or more (--expected-agents)"},
		{"unknown image policy", Config{ImagePolicy: "trustNodes"}, `image policy "trustNodes": use resolveOnServer, pinFromNodes or unpinned (--image-policy)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(context.Background(), testConfig(t, tt.cfg))
			if err == nil {
				s.Close()
				t.Fatalf("New: no error; want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v; want %q", err, tt.want)
			}
		})
	}
	if _, err := New(context.Background(), Config{}); err == nil || !strings.Contains(err.Error(), "data directory: required (--data-dir)") {
		t.Errorf("New without a data dir: %v; want it required", err)
	}
}

// TestValidateTakesZeroAsSet: for a caller whose config starts from
// DefaultConfig, as the CLI's flags do, a zero is a value given, and
// wrong; every problem is reported, not only the first.
func TestValidateTakesZeroAsSet(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HeartbeatInterval, cfg.MaxEvents = 0, 0
	err := cfg.Validate()
	for _, want := range []string{"heartbeat interval 0s: must be positive (--heartbeat-interval)", "max events 0: must be at least 1 (--max-events)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want %q", err, want)
		}
	}
}

// TestCloseReleasesAndRunRefusesAfter: Close frees what New bound, so a
// new server may take the same data dir and addresses; it may be called
// again; and a closed server does not run.
func TestCloseReleasesAndRunRefusesAfter(t *testing.T) {
	first, _ := newTestServer(t)
	dir := first.cfg.DataDir
	apiAddr, agentAddr := first.apiLn.Addr().String(), first.AgentAddr()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := first.Run(context.Background()); err == nil {
		t.Error("Run after Close: no error")
	}
	newTestServerConfig(t, Config{DataDir: dir, APIAddr: apiAddr, AgentAddr: agentAddr})
}
