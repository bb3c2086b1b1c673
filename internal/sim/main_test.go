package sim_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/pgtest"
)

// Every goroutine the simulator, its agents and the test server start ends
// when their Run returns; the PostgreSQL of the tests stops after them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}
