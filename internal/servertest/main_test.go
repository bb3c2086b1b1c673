package servertest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the server starts ends when its Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
