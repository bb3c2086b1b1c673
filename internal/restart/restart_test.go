package restart

import (
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/spec"
)

func TestExitedPolicy(t *testing.T) {
	tests := []struct {
		policy  spec.RestartPolicy
		code    int
		restart bool
	}{
		{"", 0, true},
		{"", 137, true},
		{spec.RestartAlways, 0, true},
		{spec.RestartOnFailure, 0, false},
		{spec.RestartOnFailure, 1, true},
		{spec.RestartNever, 0, false},
		{spec.RestartNever, 1, false},
	}
	for _, tt := range tests {
		var tr Tracker
		if got := tr.Exited(tt.policy, tt.code, time.Second); got.Restart != tt.restart || got.CrashLoop {
			t.Errorf("policy %q, exit %d: got %+v; want Restart %v and no crash loop", tt.policy, tt.code, got, tt.restart)
		}
	}
}

// TestCrashLoop walks an instance that keeps exiting: each restart waits
// longer, the (Tolerance+1)th exit in a row is a crash loop, and a container
// that then stays up for ResetAfter is forgiven.
func TestCrashLoop(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var tr Tracker
	steps := []struct {
		ranFor    time.Duration
		wait      time.Duration // before the restart the exit asks for
		crashLoop bool
	}{
		{time.Second, 0, false},
		{time.Second, FirstDelay, false},
		{time.Second, 2 * FirstDelay, false},
		{time.Second, 4 * FirstDelay, true},
		{time.Second, 8 * FirstDelay, true},
		{ResetAfter, 0, false},
	}
	for i, s := range steps {
		d := tr.Exited(spec.RestartAlways, 1, s.ranFor)
		if !d.Restart || d.CrashLoop != s.crashLoop {
			t.Fatalf("exit %d: got %+v; want a restart, crash loop %v", i+1, d, s.crashLoop)
		}
		if got := tr.Wait(now); got != s.wait {
			t.Fatalf("exit %d: wait %v; want %v", i+1, got, s.wait)
		}
		now = now.Add(s.wait)
		if got := tr.Wait(now); got != 0 {
			t.Fatalf("exit %d: wait %v after the backoff; want 0", i+1, got)
		}
		tr.Restarted(now)
	}
	if got := tr.Restarts(); got != len(steps) {
		t.Errorf("restarts: got %d; want %d", got, len(steps))
	}
}

func TestBackoffCapped(t *testing.T) {
	now := time.Now()
	var tr Tracker
	for range 20 {
		tr.Failed(now)
	}
	if got := tr.Wait(now); got != MaxDelay {
		t.Errorf("wait after 20 failures: got %v; want %v", got, MaxDelay)
	}
	if got := tr.Restarts(); got != 0 {
		t.Errorf("restarts after failed attempts: got %d; want 0", got)
	}
}
