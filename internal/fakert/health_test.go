package fakert_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
)

// startContainer creates and starts a container of node n1 with env.
func startContainer(t *testing.T, rt *fakert.Runtime, env map[string]string) string {
	t.Helper()
	rt.AddImage(image)
	id, err := rt.Create(t.Context(), container.Config{Image: image, Env: env, Labels: map[string]string{container.LabelNode: "n1"}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := rt.Start(t.Context(), "n1", id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return id
}

func execCode(t *testing.T, rt *fakert.Runtime, id string) int {
	t.Helper()
	code, err := rt.Exec(t.Context(), "n1", id, []string{"/hello", "-check"})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	return code
}

func TestHealthPolicy(t *testing.T) {
	t.Run("none: every exec passes", func(t *testing.T) {
		rt := fakert.New()
		if got := execCode(t, rt, startContainer(t, rt, nil)); got != 0 {
			t.Errorf("exit code: got %d; want 0", got)
		}
	})

	t.Run("unhealthy", func(t *testing.T) {
		rt := fakert.New()
		rt.SetHealth(fakert.Unhealthy)
		if got := execCode(t, rt, startContainer(t, rt, nil)); got != 1 {
			t.Errorf("exit code: got %d; want 1", got)
		}
	})

	t.Run("healthy after a delay, again after a restart", func(t *testing.T) {
		rt := fakert.New()
		clock := clockwork.NewFakeClock()
		rt.SetClock(clock)
		const d = 200 * time.Millisecond
		rt.SetHealth(fakert.HealthyAfter(d))
		id := startContainer(t, rt, nil)
		if got := execCode(t, rt, id); got != 1 {
			t.Errorf("exit code at once: got %d; want 1", got)
		}
		clock.Advance(d - time.Nanosecond)
		if got := execCode(t, rt, id); got != 1 {
			t.Errorf("exit code just before %s: got %d; want 1", d, got)
		}
		clock.Advance(time.Nanosecond)
		if got := execCode(t, rt, id); got != 0 {
			t.Errorf("exit code after %s: got %d; want 0", d, got)
		}
		if err := rt.Kill(id, 1); err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(t.Context(), "n1", id); err != nil {
			t.Fatal(err)
		}
		if got := execCode(t, rt, id); got != 1 {
			t.Errorf("exit code at once after a restart: got %d; want 1", got)
		}
	})

	t.Run("zero delay passes at once", func(t *testing.T) {
		rt := fakert.New()
		rt.SetHealth(fakert.HealthyAfter(0))
		if got := execCode(t, rt, startContainer(t, rt, nil)); got != 0 {
			t.Errorf("exit code: got %d; want 0", got)
		}
	})

	t.Run("the policy sees the container's configuration", func(t *testing.T) {
		rt := fakert.New()
		rt.SetHealth(func(cfg container.Config, _ time.Duration) int {
			if cfg.Env["BROKEN"] == "1" {
				return 1
			}
			return 0
		})
		if got := execCode(t, rt, startContainer(t, rt, map[string]string{"BROKEN": "1"})); got != 1 {
			t.Errorf("broken: got %d; want 1", got)
		}
		if got := execCode(t, rt, startContainer(t, rt, nil)); got != 0 {
			t.Errorf("fine: got %d; want 0", got)
		}
	})

	t.Run("SetExecExitCode wins over the policy", func(t *testing.T) {
		rt := fakert.New()
		rt.SetHealth(fakert.Unhealthy)
		id := startContainer(t, rt, nil)
		rt.SetExecExitCode(id, 0)
		if got := execCode(t, rt, id); got != 0 {
			t.Errorf("exit code: got %d; want 0", got)
		}
	})

	t.Run("a container not running is still an error", func(t *testing.T) {
		rt := fakert.New()
		rt.SetHealth(fakert.HealthyAfter(0))
		id := startContainer(t, rt, nil)
		if err := rt.Kill(id, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.Exec(context.Background(), "n1", id, []string{"true"}); err == nil {
			t.Errorf("Exec in a stopped container: got nil error; want one")
		}
	})
}
