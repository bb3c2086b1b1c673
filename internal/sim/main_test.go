package sim_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the simulator, its agents and the test server start ends
// when their Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
