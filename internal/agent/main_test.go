package agent_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the server and the agents start ends when their Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
