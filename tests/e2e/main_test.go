// Package e2e runs the real dockfleet binary as a server and several agents,
// as separate processes, against the real Docker daemon.
package e2e

import (
	"testing"

	"github.com/dockfleet/dockfleet/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
