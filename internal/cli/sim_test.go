package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestSimUsageErrors(t *testing.T) {
	tok := map[string]string{envAgentToken: "from-env"}
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"no server", tok, []string{"sim", "--agents", "1"}, "--server is required"},
		{"no agents", tok, []string{"sim", "--server", "127.0.0.1:7401"}, "--agents is required"},
		{"zero agents", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "0"}, "--agents must be at least 1"},
		{"agents not a number", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "many"}, "invalid argument"},
		{"no token for a new data dir", nil, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1"}, "--token"},
		{"fraction over 1", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--unhealthy-fraction", "1.5"}, "between 0 and 1"},
		{"negative fraction", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--unhealthy-fraction=-0.1"}, "between 0 and 1"},
		{"negative delay", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--healthy-after=-1s"}, "--healthy-after"},
		{"bad source IP", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--source-ip", "127.0.0.2,nope"}, `"nope" is not an IP address`},
		{"foreign source IP", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--source-ip", "192.0.2.1"}, "not usable on this host"},
		{"zero ramp", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--ramp", "0"}, "--ramp"},
		{"zero resync", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--resync", "0s"}, "--resync"},
		{"bad labels", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "--labels", "=x"}, "--labels"},
		{"an argument", tok, []string{"sim", "--server", "127.0.0.1:7401", "--agents", "1", "extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.vars, "", tt.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", r.code, r.stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestFileLimitWarning(t *testing.T) {
	tests := []struct {
		agents int
		limit  uint64
		want   string // "" for no warning
	}{
		{2000, 20000, ""},
		{19700, 20000, ""},
		{19701, 20000, "run 2 sim processes of at most 9851 agents"},
		{50000, 20000, "run 3 sim processes of at most 16667 agents"},
		{10, 250, "will not fit"},
	}
	for _, tt := range tests {
		got := fileLimitWarning(tt.agents, 200, tt.limit)
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("fileLimitWarning(%d agents, limit %d): got %q; want %q", tt.agents, tt.limit, got, tt.want)
		}
	}
}

// TestSimRunsAgents runs the sim command against a real server on loopback
// until its agents are connected, and checks that it stops with exit 0.
func TestSimRunsAgents(t *testing.T) {
	ctx := context.Background()
	srv := servertest.Start(t, nil)
	tok, err := srv.Client.CreateToken(ctx, api.TokenRequest{Uses: 3, AgentLabels: []string{"role"}})
	if err != nil {
		t.Fatal(err)
	}

	var stdout, stderr testenv.Buffer
	e := &env{
		stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return map[string]string{envAgentToken: tok.Token}[k] },
		now:    time.Now,
	}
	simCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan int, 1)
	go func() {
		done <- run(simCtx, []string{"sim", "--server", srv.AgentAddr, "--agents", "3", "--name-prefix", "cli",
			"--labels", "role=sim", "--data-dir", t.TempDir(), "--events", "--source-ip", "127.0.0.2"}, e)
	}()
	testenv.Eventually(t, 20*time.Second, "3 agents to connect", func() error {
		select {
		case code := <-done:
			t.Fatalf("sim exited with %d before its agents connected\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
		default:
		}
		if n := strings.Count(stdout.String(), `"event":"connected"`); n < 3 {
			return fmt.Errorf("%d connected\nstdout: %s\nstderr: %s", n, stdout.String(), stderr.String())
		}
		return nil
	})
	if !strings.Contains(stdout.String(), `"agent":"cli-3"`) {
		t.Errorf("stdout does not name agent cli-3:\n%s", stdout.String())
	}
	stop()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code %d after the context ended; want 0\nstderr: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sim did not stop in 20s after its context ended")
	}
	if !strings.Contains(stderr.String(), "all 3 agents connected in") {
		t.Errorf("stderr does not report the agents connected:\n%s", stderr.String())
	}
}
