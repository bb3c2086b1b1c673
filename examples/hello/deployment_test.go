package main

import (
	"os"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/spec"
)

// TestDeploymentExample keeps the example beside this program valid as the
// spec evolves.
func TestDeploymentExample(t *testing.T) {
	data, err := os.ReadFile("deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := spec.Parse("deployment.yaml", data)
	if err != nil {
		t.Fatalf("parsing the example: %v", err)
	}
	if len(ds) != 1 {
		t.Fatalf("deployments: got %d; want 1", len(ds))
	}
	d := ds[0]
	c := d.Spec.Container
	if d.Metadata.Name != "hello" || d.Spec.Mode != spec.ModeGlobal || c.Image != "hello:v1" ||
		d.Spec.Selector.MatchLabels["role"] != "web" || len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("deployment: got %+v; want hello:v1, global, on role=web, port 8080", d)
	}
	hc := c.HealthCheck
	if hc == nil || hc.HTTP == nil || hc.HTTP.Path != "/healthz" || hc.HTTP.Port != 8080 || time.Duration(hc.Interval) != 2*time.Second {
		t.Errorf("health check: got %+v; want GET /healthz on 8080 every 2s", hc)
	}
}
