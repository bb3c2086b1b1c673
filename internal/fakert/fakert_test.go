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
	rt.AddImage(image) // built here, as the hello images are for the real daemon
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
		Push: func(t *testing.T) (string, string) {
			repo := "registry.example/dockfleet/" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
			rt.SetDigest(repo+":v1", digest1)
			return repo + ":v1", repo + "@" + digest1
		},
	})
}

const (
	digest1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digest2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func TestEnsureImagePullsOnce(t *testing.T) {
	rt := fakert.New()
	ctx := t.Context()
	for _, ref := range []string{image, "docker.io/library/hello:v1", "hello:v1"} {
		if _, err := rt.EnsureImage(ctx, ref); err != nil {
			t.Fatalf("EnsureImage(%s): %v", ref, err)
		}
	}
	if got := rt.Pulls(image); got != 1 {
		t.Errorf("Pulls(%s): got %d; want 1: its spellings name one image", image, got)
	}

	rt.FailPull(missing, "manifest unknown")
	_, err := rt.EnsureImage(ctx, missing)
	if err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("EnsureImage(%s): got %v; want the registry's message", missing, err)
	}
	rt.FailPull(missing, "")
	if _, err := rt.EnsureImage(ctx, missing); err != nil {
		t.Errorf("EnsureImage(%s) after the failure is cleared: %v", missing, err)
	}
	if got := rt.Pulls(missing); got != 2 {
		t.Errorf("Pulls(%s): got %d; want 2", missing, got)
	}
}

// TestDigests covers the fake registry's digests: the same in every
// Runtime by default, moved by SetDigest, kept by an image pulled before.
func TestDigests(t *testing.T) {
	ctx := t.Context()
	a, b := fakert.New(), fakert.New()
	ensure := func(rt *fakert.Runtime, ref string) string {
		t.Helper()
		pinned, err := rt.EnsureImage(ctx, ref)
		if err != nil {
			t.Fatalf("EnsureImage(%s): %v", ref, err)
		}
		return pinned
	}

	pa, pb := ensure(a, "nginx:1.25"), ensure(b, "docker.io/library/nginx:1.25")
	if !strings.HasPrefix(pa, "nginx@sha256:") || len(pa) != len("nginx@sha256:")+64 || pa != pb {
		t.Errorf("default digests of nginx:1.25 on two runtimes: got %q and %q; want one nginx@sha256:…", pa, pb)
	}
	if other := ensure(a, "nginx:1.26"); other == pa {
		t.Errorf("nginx:1.26: got digest %q; want one other than nginx:1.25's", other)
	}
	if got := ensure(a, pa); got != pa || a.Pulls(pa) != 0 {
		t.Errorf("EnsureImage(%s) after its tag's pull: got %q with %d pulls; want it present", pa, got, a.Pulls(pa))
	}

	// The tag moves: a runtime that pulled it keeps its digest, one that
	// pulls it now gets the new one, and the old digest can still be pulled.
	b.SetDigest("nginx:1.25", digest2)
	c := fakert.New()
	c.SetDigest("nginx:1.25", digest2)
	if got := ensure(b, "nginx:1.25"); got != pb {
		t.Errorf("after the tag moved, present: got %q; want %q", got, pb)
	}
	if got, want := ensure(c, "nginx:1.25"), "nginx@"+digest2; got != want {
		t.Errorf("after the tag moved, pulled: got %q; want %q", got, want)
	}
	if got := ensure(c, pa); got != pa || c.Pulls(pa) != 1 {
		t.Errorf("EnsureImage(%s) by digest: got %q with %d pulls; want it pulled once", pa, got, c.Pulls(pa))
	}
	if got := ensure(c, "nginx:ignored@"+digest1); got != "nginx@"+digest1 {
		t.Errorf("tag and digest: got %q; want the tag dropped", got)
	}

	// Built here: no digest, and no pull.
	a.AddImage("app:dev")
	if got := ensure(a, "app:dev"); got != "" || a.Pulls("app:dev") != 0 {
		t.Errorf("EnsureImage of a local build: got %q with %d pulls; want no digest, no pull", got, a.Pulls("app:dev"))
	}
	if _, err := a.EnsureImage(ctx, "Not/Valid"); err == nil {
		t.Errorf("EnsureImage of an invalid reference: got nil error; want one")
	}

	// A container is created from any spelling of a present image.
	for _, ref := range []string{pa, "nginx:1.25", "docker.io/library/nginx:1.25"} {
		if _, err := a.Create(ctx, container.Config{Image: ref, Labels: map[string]string{container.LabelNode: "n1"}}); err != nil {
			t.Errorf("Create from %s: %v", ref, err)
		}
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
	if _, err := rt.EnsureImage(ctx, image); err == nil {
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
