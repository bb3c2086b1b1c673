package fakert_test

import (
	"context"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/runtimetest"
)

const (
	image   = "hello:v1"
	missing = "registry.invalid/missing:v0"
)

func TestConformance(t *testing.T) {
	rt := fakert.New()
	rt.FailPull(missing, "manifest unknown")
	runtimetest.Run(t, runtimetest.Backend{
		Runtime:      rt,
		Image:        image,
		MissingImage: missing,
		ExecCommand: func(t *testing.T, id string, code int) []string {
			rt.SetExecExitCode(id, code)
			return []string{"/hello", "-check", "http://127.0.0.1:8080/healthz"}
		},
		Crash: func(t *testing.T, id string) int {
			if err := rt.Kill(id, 2); err != nil {
				t.Fatal(err)
			}
			return 2
		},
		Delete: func(t *testing.T, id string) {
			if err := rt.Delete(id); err != nil {
				t.Fatal(err)
			}
		},
		CreateUnowned: func(t *testing.T, name string, labels map[string]string) string {
			rt.AddImage(image)
			id, err := rt.CreateUnowned(container.Config{Name: name, Image: image, Labels: labels})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rt.Delete(id) })
			return id
		},
		Exists: func(t *testing.T, id string) bool {
			_, ok := rt.Config(id)
			return ok
		},
	})
}

func TestEnsureImagePullsOnce(t *testing.T) {
	rt := fakert.New()
	ctx := t.Context()
	for range 3 {
		if err := rt.EnsureImage(ctx, image); err != nil {
			t.Fatalf("EnsureImage: %v", err)
		}
	}
	if got := rt.Pulls(image); got != 1 {
		t.Errorf("Pulls(%s): got %d; want 1", image, got)
	}

	rt.FailPull(missing, "manifest unknown")
	err := rt.EnsureImage(ctx, missing)
	if err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("EnsureImage(%s): got %v; want the registry's message", missing, err)
	}
	rt.FailPull(missing, "")
	if err := rt.EnsureImage(ctx, missing); err != nil {
		t.Errorf("EnsureImage(%s) after the failure is cleared: %v", missing, err)
	}
	if got := rt.Pulls(missing); got != 2 {
		t.Errorf("Pulls(%s): got %d; want 2", missing, got)
	}
}

func TestConfigIsCopied(t *testing.T) {
	rt := fakert.New()
	rt.AddImage(image)
	cfg := container.Config{
		Name:   "web",
		Image:  image,
		Args:   []string{"-addr", ":80"},
		Env:    map[string]string{"A": "1"},
		Labels: map[string]string{container.LabelNode: "n1"},
		Ports:  []container.Port{{ContainerPort: 8080, HostPort: 80, HostIP: "127.0.0.1", Protocol: "tcp"}},
		Mounts: []container.Mount{{Source: "data", Target: "/data"}},
		CPUs:   0.5,
	}
	id, err := rt.Create(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cfg.Env["A"] = "changed"
	cfg.Args[0] = "changed"
	got, ok := rt.Config(id)
	if !ok {
		t.Fatalf("Config(%s): not found", id)
	}
	if got.Env["A"] != "1" || got.Args[0] != "-addr" || got.Ports[0].HostPort != 80 || got.CPUs != 0.5 {
		t.Errorf("Config(%s): got %+v; want what Create was given, unaffected by later changes", id, got)
	}
}

func TestDistinctAddresses(t *testing.T) {
	rt := fakert.New()
	rt.AddImage(image)
	ctx := t.Context()
	const n = 1000
	for i := range n {
		id, err := rt.Create(ctx, container.Config{Image: image, Labels: map[string]string{container.LabelNode: "n1"}})
		if err != nil {
			t.Fatalf("Create %d: %v", i, err)
		}
		if err := rt.Start(ctx, "n1", id); err != nil {
			t.Fatalf("Start %d: %v", i, err)
		}
	}
	states, err := rt.List(ctx, "n1")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	seen := map[string]bool{}
	for _, st := range states {
		if !strings.HasPrefix(st.IP, "127.88.") || seen[st.IP] {
			t.Fatalf("container %s: got IP %q; want a loopback address of its own", st.ID, st.IP)
		}
		seen[st.IP] = true
	}
	if len(seen) != n {
		t.Errorf("addresses: got %d; want %d", len(seen), n)
	}
}

func TestKillErrors(t *testing.T) {
	rt := fakert.New()
	rt.AddImage(image)
	id, err := rt.Create(t.Context(), container.Config{Image: image, Labels: map[string]string{container.LabelNode: "n1"}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	tests := []struct {
		name string
		id   string
	}{
		{"not running", id},
		{"no such container", "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := rt.Kill(tt.id, 1); err == nil {
				t.Errorf("Kill(%s): got nil error; want one", tt.id)
			}
		})
	}
}

func TestCanceledContext(t *testing.T) {
	rt := fakert.New()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := rt.List(ctx, "n1"); err == nil {
		t.Errorf("List with a canceled context: got nil error; want one")
	}
	if err := rt.EnsureImage(ctx, image); err == nil {
		t.Errorf("EnsureImage with a canceled context: got nil error; want one")
	}
	if _, err := rt.Exec(ctx, "n1", "x", []string{"true"}); err == nil {
		t.Errorf("Exec with a canceled context: got nil error; want one")
	}
}

// BenchmarkSimulatedNode measures what one simulated agent's runtime costs:
// 20 containers created, started and listed.
func BenchmarkSimulatedNode(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		rt := fakert.New()
		rt.AddImage(image)
		for range 20 {
			id, err := rt.Create(ctx, container.Config{Image: image, Labels: map[string]string{container.LabelNode: "n1"}})
			if err != nil {
				b.Fatal(err)
			}
			if err := rt.Start(ctx, "n1", id); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := rt.List(ctx, "n1"); err != nil {
			b.Fatal(err)
		}
	}
}
