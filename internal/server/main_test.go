package server

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/pgtest"
)

// Every goroutine a server starts, and every handler it serves, ends
// before its Run returns; Close releases a server that never ran.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}
