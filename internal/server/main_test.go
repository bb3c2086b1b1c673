package server

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a server starts, and every handler it serves, ends
// before its Run returns; Close releases a server that never ran.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
