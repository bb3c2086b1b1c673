package health_test

import (
	"context"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
	"github.com/dockfleet/dockfleet/internal/health"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestDocker probes real hello containers on Docker's bridge: v1 is
// healthy, broken answers /healthz with 500.
func TestDocker(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	node := "node-" + testenv.ID()
	v1 := runHello(t, rt, node, "hello:v1")
	broken := runHello(t, rt, node, "hello:broken")

	httpCheck := spec.HealthCheck{HTTP: &spec.HTTPCheck{Path: "/healthz", Port: 8080}}
	execCheck := spec.HealthCheck{Exec: &spec.ExecCheck{Command: []string{"/hello", "-check", "http://127.0.0.1:8080/healthz"}}}
	tcpCheck := spec.HealthCheck{TCP: &spec.TCPCheck{Port: 8080}}
	tests := []struct {
		name       string
		hc         spec.HealthCheck
		target     container.State
		wantReason string // "" wants healthy
	}{
		{"http healthy", httpCheck, v1, ""},
		{"http unhealthy", httpCheck, broken, "http://" + broken.IP + ":8080/healthz: status 500"},
		{"exec healthy", execCheck, v1, ""},
		{"exec unhealthy", execCheck, broken, `exec ["/hello" "-check" "http://127.0.0.1:8080/healthz"]: exit code 1`},
		{"tcp healthy", tcpCheck, broken, ""}, // it listens, though /healthz fails
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.hc.Interval = spec.Duration(100 * time.Millisecond)
			tt.hc.Timeout = spec.Duration(time.Second)
			tt.hc.Retries = 3
			// The server needs a moment after start: the start period covers it.
			tt.hc.StartPeriod = spec.Duration(2 * time.Second)
			reports := watch(t, tt.hc, health.Target{IP: tt.target.IP, NodeID: node, ContainerID: tt.target.ID, Exec: rt})
			if tt.wantReason == "" {
				expectHealthy(t, reports)
			} else {
				expectUnhealthy(t, reports, tt.wantReason)
			}
		})
	}
}

// runHello starts a container of image for node, removed when the test
// ends, and returns its running state.
func runHello(t *testing.T, rt *dockerrt.Client, node, image string) container.State {
	t.Helper()
	id, err := rt.Create(t.Context(), container.Config{
		Name:  "dftest-" + testenv.ID(),
		Image: image,
		Labels: map[string]string{
			container.LabelNode: node,
			testenv.LabelTest:   "1",
		},
	})
	if err != nil {
		t.Fatalf("Create(%s): %v", image, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Remove(ctx, node, id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := rt.Start(t.Context(), node, id); err != nil {
		t.Fatalf("Start(%s): %v", id, err)
	}
	states, err := rt.List(t.Context(), node)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, st := range states {
		if st.ID == id && st.Running && st.IP != "" {
			return st
		}
	}
	t.Fatalf("container %s of %s: not running with an address after Start", id, image)
	return container.State{}
}
